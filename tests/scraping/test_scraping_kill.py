"""A ``manage.py scrape`` process killed mid-crawl and started again ends with the catalog of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from scraping_sites import catalog_snapshot

from bench.devsite import TccCar, build_tcc_site, photo
from catalog.models import CarImage, CarModel, Manufacturer, Specification
from scraping import services
from scraping.models import PageRecord, PageStatus, RunStatus, ScrapeRun

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _cars() -> list[TccCar]:
    cars = []
    for make_number, make in enumerate(["Audi", "Mazda", "Subaru"]):
        for model_number in range(3):
            seed = make_number * 10 + model_number
            cars.append(
                TccCar(
                    make=make,
                    make_slug=make.lower(),
                    model=f"M{model_number}.{make_number}",
                    model_slug=f"m{model_number}-{make_number}",
                    year=2023,
                    msrp=f"${30_000 + seed * 1_000:,}",
                    rows=[("SAE Net Horsepower @ RPM", f"{200 + seed} @ 6000"), ("Passenger Capacity", "5")],
                    images=[photo(100 + seed), photo(200 + seed)],
                )
            )
    return cars


def _scrape(site, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "scrape", "--base-url", site.base_url, "--years", "2023", "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_run_restarted_finishes_with_the_same_catalog(site, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the subprocess needs a database server it can share with the test")
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CELERY_BROKER_URL": "",
        "SCRAPER_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
        "SCRAPER_RATE_PER_HOST": "0",
        "SCRAPER_BACKOFF_BASE": "0.01",
        "LOG_LEVEL": "WARNING",
    }
    cars = _cars()
    build_tcc_site(site, cars)
    site.delay = 0.04  # slow enough to be killed mid-way

    first = _scrape(site, env)
    deadline = time.monotonic() + 30
    while CarModel.objects.count() < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()

    run = ScrapeRun.objects.get()
    assert run.status == RunStatus.RUNNING  # it never got to finish
    assert PageRecord.objects.filter(run=run, status=PageStatus.PENDING).exists()
    assert 3 <= CarModel.objects.count() < len(cars)
    # No half-written model: every car model made so far has its specifications.
    assert Specification.objects.count() == CarModel.objects.count()

    site.delay = 0
    second = _scrape(site, env)
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    assert f"Resuming unfinished run #{run.pk}" in out
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.pages_failed == 0
    resumed = catalog_snapshot()
    assert len(resumed["models"]) == len(cars) and len(resumed["images"]) == 2 * len(cars)
    assert site.hits["/new-cars"] == 1  # finished pages were not fetched again

    # The same crawl, uninterrupted, from an empty catalog.
    CarImage.objects.all().delete()
    Specification.objects.all().delete()
    CarModel.objects.all().delete()
    Manufacturer.objects.all().delete()
    PageRecord.objects.all().delete()
    uninterrupted = services.run_drive(
        services.run_create(source="tcc", base_url=site.base_url, years=[2023], rate_per_second=0).pk
    )
    assert uninterrupted.status == RunStatus.DONE
    assert catalog_snapshot() == resumed
