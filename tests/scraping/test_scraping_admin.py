"""The scrape run admin: start a run, read its counts and errors; never a 500."""

import pytest
from django.urls import reverse
from scraping_sites import AUDI_A4, VW_ID4

from bench.devsite import build_tcc_site, tcc_image_path
from scraping import services
from scraping.models import PageRecord, RunStatus, ScrapeRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("curator", "curator@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_start_run_from_admin_and_read_its_errors(site, staff_client, django_capture_on_commit_callbacks):
    build_tcc_site(site, [AUDI_A4, VW_ID4])
    add_url = reverse("admin:scraping_scraperun_add")
    assert staff_client.get(add_url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            add_url, {"source": "tcc", "base_url": site.base_url, "years": "2023", "makes": "", "rate_per_second": "0"}
        )
    run = ScrapeRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:scraping_scraperun_change", args=[run.pk]
    )
    assert run.status == RunStatus.DONE and run.models_created == 2 and run.years == [2023]

    listing = staff_client.get(reverse("admin:scraping_scraperun_changelist"))
    assert listing.status_code == 200 and site.base_url in listing.content.decode()

    detail = staff_client.get(reverse("admin:scraping_scraperun_change", args=[run.pk])).content.decode()
    assert 'http-equiv="refresh"' not in detail  # finished: no auto-refresh
    assert tcc_image_path(VW_ID4, 2) in detail and "not_an_image" in detail
    assert "duplicate" in detail

    pages = staff_client.get(reverse("admin:scraping_pagerecord_changelist") + f"?run__id__exact={run.pk}")
    assert pages.status_code == 200
    record = PageRecord.objects.filter(run=run).first()
    assert staff_client.get(reverse("admin:scraping_pagerecord_change", args=[record.pk])).status_code == 200


def test_running_run_page_refreshes_itself(staff_client):
    run = services.run_create(source="tcc", base_url="https://www.example.com")
    ScrapeRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    detail = staff_client.get(reverse("admin:scraping_scraperun_change", args=[run.pk])).content.decode()
    assert 'http-equiv="refresh"' in detail


def test_bad_start_form_shows_errors_not_500(staff_client):
    response = staff_client.post(
        reverse("admin:scraping_scraperun_add"), {"source": "nope", "base_url": "not a url", "years": "20x3"}
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert set(form.errors) == {"source", "base_url", "years"}
    assert not ScrapeRun.objects.exists()


def test_cancel_and_resume_actions(staff_client, site, django_capture_on_commit_callbacks):
    build_tcc_site(site, [AUDI_A4])
    run = services.run_create(source="tcc", base_url=site.base_url, rate_per_second=0)
    changelist = reverse("admin:scraping_scraperun_changelist")
    staff_client.post(changelist, {"action": "cancel_runs", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(changelist, {"action": "resume_runs", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.models_created == 1
