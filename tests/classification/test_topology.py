"""The production topology: PostgreSQL, Redis and real Celery worker processes started by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus

pytestmark = [pytest.mark.topology, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = int(os.environ.get("CARSITE_TEST_REDIS_DB", "13"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
URL = "/api/v1/classifications/"


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the production topology needs PostgreSQL")
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def redis_broker():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    client.flushdb()
    from carsite.celery import app

    saved = {key: app.conf[key] for key in ("task_always_eager", "broker_url")}
    app.conf.update(task_always_eager=False, broker_url=REDIS_URL)
    _forget_broker_connections(app)
    yield client
    app.conf.update(saved)
    _forget_broker_connections(app)
    client.flushdb()


def _forget_broker_connections(app) -> None:
    """Publishing must use the broker configured now, not a pool an earlier test created for another URL."""
    app._pool = None
    app.amqp._producer_pool = None


class Workers:
    """Celery worker processes of this test; each in its own process group so it can be killed whole."""

    def __init__(self, tmp_path: Path, models_dir: Path) -> None:
        self.tmp_path, self.models_dir, self.processes = tmp_path, models_dir, []

    def start(
        self, *, delay_ms: int = 0, visibility_timeout: int = 3600, lease_seconds: float = 60, name: str = "w"
    ) -> subprocess.Popen:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "CARSITE_MODELS_DIR": str(self.models_dir),
            "CARSITE_CLASSIFY_TEST_DELAY_MS": str(delay_ms),
            "CARSITE_CLASSIFY_LEASE_SECONDS": str(lease_seconds),
            "CARSITE_INFERENCE_THREADS": "1",
            "SECRET_KEY": settings.SECRET_KEY,
            "DEBUG": "0",
        }
        log = (self.tmp_path / f"worker-{name}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "carsite",
                "worker",
                "-Q",
                "default,ml",
                "-c",
                "2",
                "--pool",
                "prefork",
                "-n",
                f"{name}-{os.getpid()}@%h",
                "-l",
                "info",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool children at once: nothing gets to ack or clean up."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp_path.glob("worker-*.log")))


@pytest.fixture
def workers(tmp_path, models_dir, redis_broker):
    pool = Workers(tmp_path, models_dir)
    yield pool
    pool.stop_all()


def _wait_until(predicate, timeout: float, workers: Workers, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}\n--- worker logs ---\n{workers.logs()}")


def _post(data: bytes, index: int) -> tuple[int, str]:
    from rest_framework.test import APIClient

    try:
        response = APIClient(REMOTE_ADDR=f"198.51.100.{index % 250 + 1}").post(
            URL, {"image": SimpleUploadedFile(f"{index}.jpg", data, content_type="image/jpeg")}
        )
        return response.status_code, response.json().get("id", "")
    finally:
        connections.close_all()


def test_fifty_concurrent_uploads_all_finish(
    transactional_db, workers, active_gate, active_classifier, mdx_photo, shared_data
):
    photos = sorted((shared_data / "car-photos" / "images").glob("Acura_*.jpg"))[:49]
    uploads = [mdx_photo] + [p.read_bytes() for p in photos]
    workers.start(name="main")

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(_post, uploads, range(len(uploads))))

    assert [status for status, _ in answers] == [202] * 50
    ids = [job_id for _, job_id in answers]
    assert len(set(ids)) == 50
    _wait_until(
        lambda: Classification.objects.filter(pk__in=ids, status=ClassificationStatus.DONE).count() == 50,
        timeout=300,
        workers=workers,
        what="50 classifications",
    )
    done = Classification.objects.filter(pk__in=ids)
    assert not done.exclude(gate_verdict__in=["exterior", "interior", "other"]).exists()
    for classification in done.filter(gate_verdict="exterior"):
        assert classification.predictions.count() == 5
        assert classification.classifier_version_id == active_classifier.pk
    assert set(done.values_list("attempts", flat=True)) == {1}
    # The same photo gives the same answer in a worker as in-process (determinism across processes).
    first = done.get(pk=ids[0])
    assert first.predicted_car_model.label == "2023 Acura MDX"


def test_job_of_a_killed_worker_is_redone_once(transactional_db, workers, active_gate, active_classifier, mdx_photo):
    from django.utils import timezone

    # The first worker sleeps 20 s inside every job; Redis hands an unacknowledged job out again
    # once its visibility timeout (3 s) has passed and a worker restores it, and the delivery takes the
    # job back once the dead worker's lease (3 s) has run out.
    slow = workers.start(delay_ms=20_000, visibility_timeout=3, lease_seconds=3, name="slow")
    status, job_id = _post(mdx_photo, 1)
    assert status == 202
    _wait_until(
        lambda: Classification.objects.filter(pk=job_id, status=ClassificationStatus.RUNNING).exists(),
        timeout=120,
        workers=workers,
        what="the job to start",
    )

    workers.kill(slow)
    assert Classification.objects.get(pk=job_id).status == ClassificationStatus.RUNNING
    _wait_until(
        lambda: Classification.objects.filter(pk=job_id, lease_expires_at__lt=timezone.now()).exists(),
        timeout=30,
        workers=workers,
        what="the dead worker's lease to expire",
    )
    workers.start(visibility_timeout=3, name="fresh")

    _wait_until(
        lambda: Classification.objects.filter(pk=job_id, status=ClassificationStatus.DONE).exists(),
        timeout=180,
        workers=workers,
        what="the redelivered job to finish",
    )
    classification = Classification.objects.get(pk=job_id)
    assert classification.attempts >= 2
    assert ClassificationPrediction.objects.filter(classification=classification).count() == 5
    ranks = ClassificationPrediction.objects.filter(classification=classification).values_list("rank", flat=True)
    assert sorted(ranks) == [1, 2, 3, 4, 5]
    assert classification.predicted_car_model.label == "2023 Acura MDX"


def test_jobs_of_a_killed_worker_are_redone_once_their_lease_expires(transactional_db, workers, active_gate, mdx_photo):
    from django.utils import timezone

    from classifier.services.execution import classifications_requeue_stuck

    # Redis would hand the message out again only after its visibility timeout (an hour here); the lease,
    # renewed while the worker lives, runs out 3 s after it dies, and the periodic requeue sends the job again.
    slow = workers.start(delay_ms=20_000, lease_seconds=3, name="slow")
    status, job_id = _post(mdx_photo, 1)
    assert status == 202
    _wait_until(
        lambda: Classification.objects.filter(pk=job_id, status=ClassificationStatus.RUNNING).exists(),
        timeout=120,
        workers=workers,
        what="the job to start",
    )
    assert classifications_requeue_stuck() == 0  # its worker is alive

    workers.kill(slow)
    workers.start(lease_seconds=3, name="fresh")
    _wait_until(
        lambda: Classification.objects.filter(pk=job_id, lease_expires_at__lt=timezone.now()).exists(),
        timeout=30,
        workers=workers,
        what="the dead worker's lease to expire",
    )
    assert classifications_requeue_stuck() == 1  # what Celery beat runs every 30 s

    _wait_until(
        lambda: Classification.objects.filter(pk=job_id, status=ClassificationStatus.DONE).exists(),
        timeout=180,
        workers=workers,
        what="the requeued job to finish",
    )
    assert Classification.objects.get(pk=job_id).attempts == 2
