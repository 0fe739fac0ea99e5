"""Outages: a broker that refuses or never answers, a database that is down, a model that cannot be loaded,
a worker that died mid-job. Uploads answer, jobs are kept and redone once, visitors see no internals."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import socket
import threading
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus
from classifier.services import execution as service
from classifier.services.execution import classification_run, classifications_requeue_stuck
from classifier.services.intake import Upload, classification_create
from tests.classification.conftest import image_bytes, media_files

pytestmark = pytest.mark.django_db
URL = "/api/v1/classifications/"
# Generous: only so that a hang fails the test instead of stalling the suite.
HANG_GUARD_SECONDS = 30


def _jpeg() -> SimpleUploadedFile:
    return SimpleUploadedFile("car.jpg", image_bytes("JPEG"), content_type="image/jpeg")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BlackHole:
    """A TCP server that accepts connections and never answers (a hung broker)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def broker(settings):
    """Point publishing at a real broker URL (``broker.use(url)``); the tasks are sent, not run in-process."""
    from carsite.celery import app

    saved = {key: app.conf[key] for key in ("task_always_eager", "broker_url")}

    class Broker:
        def use(self, url: str) -> None:
            settings.CELERY_BROKER_URL = url
            app.conf.update(task_always_eager=False, broker_url=url)
            app._pool = None
            app.amqp._producer_pool = None

        def back(self) -> None:
            """The broker is back: here, tasks run in-process again as in the embedded default."""
            app.conf.update(saved)
            app._pool = None
            app.amqp._producer_pool = None

    yield Broker()
    Broker().back()


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


def result_url(job: Classification) -> str:
    from django.urls import reverse

    return reverse("classifier:result", kwargs={"pk": job.pk})


class Hung(BaseException):
    """Raised into a block that has not returned in time (a BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def hang_guard():
    """Fail the test, rather than stall the suite, if the block has not returned by the guard's time."""

    def hung(signum, frame):
        raise Hung(f"still waiting after {HANG_GUARD_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_GUARD_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- the broker refuses or never answers ---


def test_a_refusing_broker_keeps_the_upload_queued_and_the_requeue_sends_it_once_back(
    client, broker, django_capture_on_commit_callbacks
):
    broker.use(f"redis://127.0.0.1:{_free_port()}/0")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, {"image": _jpeg()})

    assert response.status_code == 202
    job = Classification.objects.get(pk=response.json()["id"])
    assert (job.status, job.error) == (ClassificationStatus.QUEUED, "")
    assert job.task_unsent_since is not None

    broker.back()
    with django_capture_on_commit_callbacks(execute=True):
        assert classifications_requeue_stuck() == 1
    job.refresh_from_db()
    assert (job.status, job.task_unsent_since) == (ClassificationStatus.DONE, None)
    assert classifications_requeue_stuck() == 0


def test_a_broker_that_never_answers_does_not_hold_the_upload(
    client, broker, black_hole, django_capture_on_commit_callbacks
):
    broker.use(f"redis://127.0.0.1:{black_hole.port}/0")

    with hang_guard(), django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, {"image": _jpeg()})

    assert response.status_code == 202
    job = Classification.objects.get(pk=response.json()["id"])
    assert job.status == ClassificationStatus.QUEUED
    assert job.task_unsent_since is not None


# --- the database is down ---


@pytest.fixture
def database_down(db, monkeypatch):
    """Every query fails as it does when PostgreSQL is stopped (the connection is refused)."""
    from django.db import OperationalError
    from django.db.backends.base.base import BaseDatabaseWrapper

    def refused(self, *args, **kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    job = classification_create(Upload(image_bytes("JPEG"), "car.jpg"))
    monkeypatch.setattr(BaseDatabaseWrapper, "cursor", refused)
    return job


def test_api_uploads_and_reads_answer_503_in_the_error_shape_while_the_database_is_down(
    client, database_down, _isolated_media
):
    stored_before = media_files(_isolated_media)
    upload = client.post(URL, {"image": _jpeg()})
    read = client.get(f"{URL}{database_down.pk}/")

    for response in (upload, read):
        assert response.status_code == 503
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "service_unavailable"
        assert set(response.json()["error"]) == {"code", "message"}
        assert "5432" not in response.content.decode()
    assert media_files(_isolated_media) == stored_before  # the refused upload left no file behind


def test_pages_answer_a_plain_503_while_the_database_is_down(client, database_down):
    for response in (
        client.get("/classify/"),
        client.get(result_url(database_down)),
        client.post("/classify/", {"image": _jpeg()}),
    ):
        assert response.status_code == 503
        assert response["Content-Type"].startswith("text/html")
        assert "Service unavailable" in response.content.decode()
        assert "5432" not in response.content.decode()


# --- a model that cannot be loaded; failures never show internals ---


def test_a_failure_tells_the_visitor_no_exception_text(client, monkeypatch, django_capture_on_commit_callbacks):
    def broken(image, active_ids):
        raise RuntimeError("/srv/carsite/secret/weights.bin is broken")

    monkeypatch.setattr(service, "_classify_image", broken)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, {"image": _jpeg()})

    job = Classification.objects.get(pk=response.json()["id"])
    assert job.status == ClassificationStatus.FAILED
    assert job.error == "The photo could not be classified."
    assert "weights.bin" in job.error_detail  # for the operator, in the admin
    for answer in (client.get(response["Location"]), client.get(result_url(job))):
        assert answer.status_code == 200
        assert "weights.bin" not in answer.content.decode()
        assert "RuntimeError" not in answer.content.decode()


def test_a_retried_task_backs_off_while_the_model_cannot_be_loaded(monkeypatch):
    from classifier import tasks

    def unavailable(classification_id):
        raise service.ClassificationUnavailable("Cannot load gate …")

    retried: list[dict] = []

    def retry(**kwargs):
        retried.append(kwargs)
        return RuntimeError("retry")

    monkeypatch.setattr(service, "classification_run", unavailable)
    monkeypatch.setattr(tasks.classify, "retry", retry)
    for retries in (0, 2, 20):
        tasks.classify.push_request(retries=retries, is_eager=False)
        try:
            with pytest.raises(RuntimeError, match="retry"):
                tasks.classify.run(str(uuid.uuid4()))
        finally:
            tasks.classify.pop_request()

    assert [call["countdown"] for call in retried] == [10, 40, 600]
    assert {call["max_retries"] for call in retried} == {None}  # never given up on: the job stays queued


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_an_unloadable_model_keeps_the_job_queued_and_tells_the_visitor_only_that_it_is_unavailable(
    client, admin_client, active_gate, mdx_photo, gate_bundle_dir, damage, django_capture_on_commit_callbacks
):
    from django.core.files.storage import default_storage

    from classifier.services.registry import STORED_MANIFEST, model_version_bundle_dir

    bundle_dir = model_version_bundle_dir(active_gate)
    if damage == "missing":  # from this host's cache and from the media storage
        shutil.rmtree(bundle_dir)
        default_storage.delete(f"{active_gate.bundle_path}/{STORED_MANIFEST}")
    else:
        (bundle_dir / "weights.safetensors").write_bytes(b"not weights")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, {"image": SimpleUploadedFile("car.jpg", mdx_photo, content_type="image/jpeg")})
    assert response.status_code == 202
    job = Classification.objects.get(pk=response.json()["id"])

    assert job.status == ClassificationStatus.QUEUED
    assert job.error == service.UNAVAILABLE_MESSAGE
    assert str(bundle_dir) in job.error_detail
    for answer in (client.get(response["Location"]), client.get(result_url(job))):
        assert answer.status_code == 200
        assert str(bundle_dir) not in answer.content.decode()
        assert "Cannot load" not in answer.content.decode()
    assert service.UNAVAILABLE_MESSAGE in client.get(result_url(job)).content.decode()
    admin_page = admin_client.get(f"/admin/classifier/classification/{job.pk}/change/")
    assert str(bundle_dir) in admin_page.content.decode()

    # The model is back: the job's next try classifies it.
    shutil.rmtree(bundle_dir, ignore_errors=True)
    shutil.copytree(gate_bundle_dir, bundle_dir)
    assert classification_run(job.pk) == 1
    job.refresh_from_db()
    assert (job.status, job.error) == (ClassificationStatus.DONE, "")


# --- a worker that died mid-job ---


def _left_by_a_dead_worker(job: Classification, *, lease_expires_at: dt.datetime | None = None) -> None:
    """Running, one attempt begun two minutes ago; with no lease, as a job claimed before leases."""
    lease = {} if lease_expires_at is None else {"lease_expires_at": lease_expires_at}
    Classification.objects.filter(pk=job.pk).update(
        status=ClassificationStatus.RUNNING,
        attempts=1,
        started_at=timezone.now() - dt.timedelta(minutes=2),
        **lease,
    )


def test_two_deliveries_of_a_dead_workers_job_run_it_once(monkeypatch):
    job = classification_create(Upload(image_bytes("JPEG"), "car.jpg"))
    _left_by_a_dead_worker(job)
    second_delivery: list[int] = []

    def while_running() -> None:
        if not second_delivery:  # the broker's redelivery and the requeue's task arrive together
            second_delivery.append(-1)
            second_delivery[0] = classification_run(job.pk)

    monkeypatch.setattr(service, "_test_delay", while_running)
    assert classification_run(job.pk) == 1

    job.refresh_from_db()
    assert second_delivery == [0]
    assert (job.status, job.attempts) == (ClassificationStatus.DONE, 2)


def test_the_requeue_redoes_running_jobs_whose_lease_expired_and_leaves_live_ones(
    django_capture_on_commit_callbacks,
):
    dead, alive = (classification_create(Upload(image_bytes("JPEG"), f"{i}.jpg")) for i in range(2))
    now = timezone.now()
    _left_by_a_dead_worker(dead, lease_expires_at=now - dt.timedelta(seconds=1))
    _left_by_a_dead_worker(alive, lease_expires_at=now + dt.timedelta(seconds=60))

    with django_capture_on_commit_callbacks(execute=True):
        assert classifications_requeue_stuck() == 1

    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.attempts) == (ClassificationStatus.DONE, 2)
    assert (alive.status, alive.attempts) == (ClassificationStatus.RUNNING, 1)
    assert not ClassificationPrediction.objects.exists()


def test_a_live_worker_renews_its_lease_so_its_job_is_never_requeued(settings, transactional_db, monkeypatch):
    settings.CARSITE_CLASSIFY_LEASE_SECONDS = 1.5
    seen: dict = {}

    def while_running() -> None:
        job = Classification.objects.get(status=ClassificationStatus.RUNNING)
        renewed = threading.Event()

        def watch() -> None:
            from django.db import connection

            while Classification.objects.get(pk=job.pk).lease_expires_at == job.lease_expires_at:
                renewed.wait(0.05)
            renewed.set()
            connection.close()

        threading.Thread(target=watch, daemon=True).start()
        assert renewed.wait(HANG_GUARD_SECONDS), "the lease was never renewed"
        renewed.wait(3.0)  # twice the lease since the claim: only the renewals keep it
        seen["requeued"] = classifications_requeue_stuck()

    monkeypatch.setattr(service, "_test_delay", while_running)
    # Committed at once here, so the upload's task runs the job right away, in this thread.
    job = classification_create(Upload(image_bytes("JPEG"), "car.jpg"))

    job.refresh_from_db()
    assert seen == {"requeued": 0}
    assert (job.status, job.attempts) == (ClassificationStatus.DONE, 1)


# --- the cache's Redis (upload throttling) refuses or never answers ---


@pytest.fixture
def cache_at(settings):
    """Point the default cache (the upload and feedback throttles' counts) at a Redis URL, until the test ends."""
    saved = settings.CACHES

    def use(url: str) -> None:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
            }
        }

    yield use
    settings.CACHES = saved  # before the other fixtures' teardown clears the cache


@pytest.mark.parametrize("outage", ["refuses", "never answers"])
def test_uploads_are_accepted_while_the_cache_and_broker_redis_is_down(
    client, broker, black_hole, cache_at, django_capture_on_commit_callbacks, outage
):
    # In production the cache is the broker's Redis: both go down together.
    port = _free_port() if outage == "refuses" else black_hole.port
    broker.use(f"redis://127.0.0.1:{port}/0")
    cache_at(f"redis://127.0.0.1:{port}/1")

    with hang_guard(), django_capture_on_commit_callbacks(execute=True):
        api = client.post(URL, {"image": _jpeg()})
        page = client.post("/classify/", {"image": _jpeg()})

    assert api.status_code == 202, api.content
    assert page.status_code == 302
    jobs = Classification.objects.all()
    assert jobs.count() == 2
    assert all(job.status == ClassificationStatus.QUEUED and job.task_unsent_since for job in jobs)


def test_the_settings_give_a_redis_cache_socket_timeouts():
    import subprocess
    import sys

    code = (
        "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['OPTIONS'])"
    )
    env = {
        **__import__("os").environ,
        "DJANGO_SETTINGS_MODULE": "carsite.settings",
        "DEBUG": "1",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/5",
        "CACHE_URL": "",
        "CACHE_TIMEOUT": "0.25",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "'socket_timeout': 0.25" in out and "'socket_connect_timeout': 0.25" in out
