"""With a broker, a run fans out as page tasks on real Celery worker processes and fills the same catalog."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from scraping_sites import AUDI_A4, KIA_TELLURIDE, MAX_IMAGE_BYTES, VW_ID4

from bench.devsite import build_tcc_site
from catalog.models import CarImage, CarModel
from scraping import services
from scraping.models import PageRecord, PageStatus, RunStatus, ScrapeRun

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("SCRAPING_TEST_BROKER_URL", "redis://127.0.0.1:6379/13")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.topology]


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(BROKER_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def test_run_fans_out_over_celery_workers(site, settings):
    if connection.vendor != "postgresql" or not _redis_up():
        pytest.skip("needs PostgreSQL and Redis")
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()  # this test's own Redis database: no stale tasks
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CELERY_BROKER_URL": BROKER_URL,
        "SCRAPER_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
        "SCRAPER_RATE_PER_HOST": "0",
        "SCRAPER_BACKOFF_BASE": "0.01",
        "SCRAPER_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "LOG_LEVEL": "WARNING",
    }
    build_tcc_site(site, [AUDI_A4, VW_ID4, KIA_TELLURIDE])
    run = services.run_create(source="tcc", base_url=site.base_url, years=[2023])
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "carsite", "worker", "-Q", "scraping", "-c", "2", "--loglevel=WARNING"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        Celery(broker=BROKER_URL).send_task("scraping.run", args=[run.pk], queue="scraping")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            run.refresh_from_db()
            if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                break
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            _out, err = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            _out, err = worker.communicate()
    run = ScrapeRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.DONE, err[-3000:]
    assert sorted(CarModel.objects.values_list("label", flat=True)) == [
        "2023 Audi A4",
        "2023 Kia Telluride",
        "2023 Volkswagen ID.4",
    ]
    assert CarImage.objects.count() == 4  # A4: 2 (plus an exact and a near duplicate skipped), ID.4: 1, Telluride: 1
    assert run.images_saved == 4 and run.images_skipped == 2 and run.images_failed == 4
    assert not PageRecord.objects.filter(run=run, status=PageStatus.PENDING).exists()
