"""A failed page is recorded once and for all, even when concurrent workers make the database abort it."""

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from catalog.services import car_model_get_or_create
from scraping import services
from scraping.http import FetchError
from scraping.models import PageKind, PageRecord, PageStatus, ScrapeRun

pytestmark = pytest.mark.django_db

IMAGE_URL = "http://cars.test/images/a4.jpg"


class _Unreachable:
    def get(self, url: str, **kwargs):
        raise FetchError("The server answered 503.", code="http_error", url=url, status=503)


class _Deadlock(Exception):
    sqlstate = "40P01"


def _image_page() -> PageRecord:
    run = services.run_create(source="tcc", base_url="http://cars.test/", years=[2023])
    run = services.run_begin(run.pk)
    car_model, _ = car_model_get_or_create(make="Audi", model="A4", year=2023)
    return PageRecord.objects.create(
        source="tcc", url=IMAGE_URL, kind=PageKind.IMAGE, run=run, car_model=car_model, status=PageStatus.PENDING
    )


def test_a_failed_page_is_written_in_one_update():
    page = _image_page()

    with CaptureQueriesContext(connection) as queries:
        services.page_process(page.pk, fetcher=_Unreachable())

    # A second UPDATE of the page in the same transaction makes PostgreSQL re-check its car model key at
    # commit, which deadlocked against a worker adding an image to that car model.
    page_updates = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "scraping_pagerecord"')]
    assert len(page_updates) == 1
    page.refresh_from_db()
    assert (page.status, page.error_code, page.http_status, page.attempts) == (PageStatus.FAILED, "http_error", 503, 1)
    assert ScrapeRun.objects.get(pk=page.run_id).images_failed == 1


def test_a_deadlock_while_recording_the_failure_is_retried_and_counted_once(monkeypatch):
    page = _image_page()
    bump = services._bump
    calls = []

    def deadlock_once(run_id, **amounts):
        calls.append(amounts)
        if len(calls) == 1:
            error = OperationalError("deadlock detected")
            error.__cause__ = _Deadlock()
            raise error
        bump(run_id, **amounts)

    monkeypatch.setattr(services, "_bump", deadlock_once)

    services.page_process(page.pk, fetcher=_Unreachable())

    page.refresh_from_db()
    assert len(calls) == 2
    assert (page.status, page.attempts) == (PageStatus.FAILED, 1)
    assert ScrapeRun.objects.get(pk=page.run_id).images_failed == 1
