"""Two worker hosts: network namespaces of their own, no shared filesystem, one PostgreSQL + Redis + S3 server.

Each "host" is a network namespace joined to this machine by a veth pair on a /30 of the test's own. The
machine's PostgreSQL and Redis listen on 127.0.0.1 only, as does the S3 server the test starts, so a small
TCP forwarder listens on the machine's end of each veth pair. Each host runs a real Celery worker with its
own media, model, compiled-graph and temporary folders: models and photos reach it only through the
bucket, jobs only through Redis and PostgreSQL. Only public behaviour is used: the API, the models, Celery.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus, ModelKind
from tests.classification.conftest import S3_BUCKET

pytestmark = [pytest.mark.topology, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = int(os.environ.get("CARSITE_TEST_REDIS_DB", "13"))
URL = "/api/v1/classifications/"
# 10.231.<host>.0/30 per host: the machine's end is .1, the namespace's .2.
SUBNET = ipaddress.ip_network("10.231.0.0/16")
UPLOADS = 200
# A killed worker held at most its threads' jobs: one each, or a batch each where the pipeline batches.
WORKER_THREADS = 2
POSTGRES_PORT, REDIS_PORT = 5432, 6379

# Copies bytes both ways between each listening address and its target on loopback.
FORWARDER = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def serve(listen_host, port):
    async def accept(reader, writer):
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))
    server = await asyncio.start_server(accept, listen_host, port)
    await server.serve_forever()

async def main():
    listen_hosts, ports = sys.argv[1].split(","), [int(p) for p in sys.argv[2].split(",")]
    await asyncio.gather(*(serve(h, p) for h in listen_hosts for p in ports))

asyncio.run(main())
"""


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed: {done.stderr.strip()}")


class Host:
    """A network namespace with a veth pair to the machine, and folders of its own."""

    def __init__(self, index: int, root: Path) -> None:
        tag = f"{os.getpid() % 100000}h{index}"
        self.index, self.namespace = index, f"carsite-{tag}"
        self.machine_link, self.host_link = f"cs{tag}m", f"cs{tag}n"
        network = ipaddress.ip_network(f"{SUBNET[index * 256]}/30")  # 10.231.<index>.0/30
        self.machine_address, self.address = (str(a) for a in network.hosts())
        self.root = root / f"host{index}"
        self.worker: subprocess.Popen | None = None
        self.beat: subprocess.Popen | None = None

    def create(self) -> None:
        _run("ip", "netns", "add", self.namespace)
        _run("ip", "link", "add", self.machine_link, "type", "veth", "peer", "name", self.host_link)
        _run("ip", "link", "set", self.host_link, "netns", self.namespace)
        _run("ip", "addr", "add", f"{self.machine_address}/30", "dev", self.machine_link)
        _run("ip", "link", "set", self.machine_link, "up")
        _run("ip", "-n", self.namespace, "addr", "add", f"{self.address}/30", "dev", self.host_link)
        _run("ip", "-n", self.namespace, "link", "set", self.host_link, "up")
        _run("ip", "-n", self.namespace, "link", "set", "lo", "up")
        for name in ("media", "models", "tmp", "home"):
            (self.root / name).mkdir(parents=True)

    def environment(self, s3_port: int) -> dict[str, str]:
        """Everything a worker host is given: the services' addresses, the bucket and its own folders."""
        db = connection.settings_dict
        via = self.machine_address
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "TMPDIR": str(self.root / "tmp"),
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "carsite.settings",
            "DEBUG": "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": f"postgres://{db.get('USER') or 'postgres'}@{via}:{POSTGRES_PORT}/{db['NAME']}",
            "CELERY_BROKER_URL": f"redis://{via}:{REDIS_PORT}/{REDIS_DB}",
            "S3_BUCKET": S3_BUCKET,
            "S3_ENDPOINT_URL": f"http://{via}:{s3_port}",
            "S3_ACCESS_KEY_ID": "test",
            "S3_SECRET_ACCESS_KEY": "test",
            "S3_REGION": "us-east-1",
            "MEDIA_ROOT": str(self.root / "media"),
            "CARSITE_MODELS_DIR": str(self.root / "models"),
            "CARSITE_SHARED_DATA_DIR": str(self.root / "no-shared-data"),
            "CARSITE_INFERENCE_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            # A dead worker's jobs are redone within seconds: a short lease and a frequent requeue check.
            "CARSITE_CLASSIFY_LEASE_SECONDS": "3",
            "CARSITE_CLASSIFY_REQUEUE_EVERY": "1",
            "CARSITE_CLASSIFY_REQUEUE_QUEUED_AFTER": "30",
        }

    def start(self, s3_port: int, *, beat: bool = False) -> None:
        env = self.environment(s3_port)
        celery = [str(REPO / ".venv" / "bin" / "celery"), "-A", "carsite"]
        if not Path(celery[0]).exists():
            celery = [sys.executable, "-m", "celery", "-A", "carsite"]
        in_namespace = ["ip", "netns", "exec", self.namespace]
        self.worker = subprocess.Popen(
            [
                *in_namespace,
                *celery,
                "worker",
                "-Q",
                "default,ml",
                "--pool",
                "threads",
                "-c",
                str(WORKER_THREADS),
                "-n",
                f"host{self.index}@%h",
                "-l",
                "info",
            ],
            cwd=self.root,
            env=env,
            stdout=(self.root / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if beat:
            self.beat = subprocess.Popen(
                [*in_namespace, *celery, "beat", "-s", str(self.root / "beat-schedule"), "-l", "info"],
                cwd=self.root,
                env=env,
                stdout=(self.root / "beat.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def worker_log(self) -> str:
        path = self.root / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tasks_in_hand(self) -> int:
        """Tasks the worker's log shows received and not finished."""
        log = self.worker_log()
        return log.count(" received") - log.count(" succeeded in ") - log.count(" raised ")

    def kill_worker(self) -> None:
        """SIGKILL the worker: nothing gets to acknowledge, finish or clean up."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)

    def stop(self) -> None:
        for process in (self.worker, self.beat):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (self.worker, self.beat):
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def remove(self) -> None:
        # Deleting the namespace deletes its end of the veth pair, and with it the machine's end.
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.machine_link], capture_output=True)


def _remove_leftovers() -> None:
    """Namespaces an earlier run of this test could not remove (it was killed): their process is gone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for name in re.findall(r"^carsite-(\d+h\d)\b", listed, flags=re.MULTILINE):
        pid = int(name.split("h")[0])
        if pid != os.getpid() % 100000 and not any(
            int(entry) % 100000 == pid for entry in os.listdir("/proc") if entry.isdigit()
        ):
            subprocess.run(["ip", "netns", "del", f"carsite-{name}"], capture_output=True)
            subprocess.run(["ip", "link", "del", f"cs{name}m"], capture_output=True)


def _subnet_in_use() -> bool:
    shown = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for word in shown.split():
        try:
            if ipaddress.ip_interface(word).ip in SUBNET:
                return True
        except ValueError:
            continue
    return False


@pytest.fixture
def hosts(tmp_path, s3_media, s3_endpoint, redis_broker):
    """Two worker hosts and the forwarders that let them reach PostgreSQL, Redis and the S3 server."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    if connection.settings_dict["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("worker hosts share a PostgreSQL database")
    _remove_leftovers()
    if _subnet_in_use():
        pytest.fail(f"{SUBNET} is already in use on this machine: remove what uses it (a killed run's leftovers?)")
    s3_port = int(s3_endpoint.rsplit(":", 1)[1])
    pair = [Host(0, tmp_path), Host(1, tmp_path)]
    forwarder = None
    try:
        for host in pair:
            host.create()
        forwarder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FORWARDER,
                ",".join(h.machine_address for h in pair),
                f"{POSTGRES_PORT},{REDIS_PORT},{s3_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "forwarder.log").open("wb"),
        )
        yield pair, s3_port
    finally:
        for host in pair:
            host.stop()
        if forwarder is not None:
            forwarder.kill()
            forwarder.wait(timeout=10)
        for host in pair:
            host.remove()


@pytest.fixture
def redis_broker():
    """This process publishes to the test's Redis database, as the web server would."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis is not running on 127.0.0.1:{REDIS_PORT}")
    client.flushdb()
    from carsite.celery import app

    saved = {key: app.conf[key] for key in ("task_always_eager", "broker_url")}
    app.conf.update(task_always_eager=False, broker_url=f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}")
    app._pool, app.amqp._producer_pool = None, None  # publish to this broker, not a pool made for another
    yield client
    app.conf.update(saved)
    app._pool, app.amqp._producer_pool = None, None
    client.flushdb()


@pytest.fixture
def models_in_the_bucket(s3_media, models_dir, clean_runtime, acura_catalog, gate_bundle_dir, classifier_bundle_dir):
    """Gate and classifier registered by this process ("host 0"): their bundles go into the bucket."""
    from classifier.services.registry import model_version_activate, model_version_register

    gate = model_version_activate(model_version_register(gate_bundle_dir))
    classifier = model_version_activate(model_version_register(classifier_bundle_dir))
    return gate, classifier


def _wait_until(predicate, timeout: float, what: str, hosts: list[Host]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- host {h.index} ---\n{h.worker_log()[-4000:]}" for h in hosts)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def _upload_all(photos: list[Path]) -> list[str]:
    """Upload through the API, ten photos a request, each request from another client address."""
    from rest_framework.test import APIClient

    ids = []
    for start in range(0, len(photos), 10):
        client = APIClient(REMOTE_ADDR=f"198.51.100.{start // 10 + 1}")
        batch = photos[start : start + 10]
        parts = [SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/jpeg") for p in batch]
        response = client.post(URL, {"image": parts})
        assert response.status_code == 202, response.content
        ids += [job["id"] for job in response.json()["results"]]
    return ids


def _done(ids: list[str]) -> int:
    return Classification.objects.filter(pk__in=ids, status=ClassificationStatus.DONE).count()


def test_two_worker_hosts_drain_200_uploads_once_and_lose_none_when_one_is_killed(
    transactional_db, hosts, models_in_the_bucket, shared_data
):
    pair, s3_port = hosts
    first, second = pair
    gate, classifier = models_in_the_bucket
    photos = sorted((shared_data / "car-photos" / "images").glob("*.jpg"))[:UPLOADS]
    assert len(photos) == UPLOADS
    first.start(s3_port)
    second.start(s3_port, beat=True)

    ids = _upload_all(photos)
    assert len(set(ids)) == UPLOADS
    # Mid-drain: both hosts have finished jobs, and the first one has tasks it has not finished.
    _wait_until(
        lambda: _done(ids) >= UPLOADS // 4 and all(h.worker_log().count(" succeeded in ") >= 5 for h in pair),
        timeout=150,
        what="both hosts to be draining",
        hosts=pair,
    )
    _wait_until(lambda: first.tasks_in_hand() > 0, timeout=30, what="the first host to have a task in hand", hosts=pair)
    first.kill_worker()
    killed_at = _done(ids)
    assert killed_at < UPLOADS, "the drain finished before a host could be killed in the middle of it"

    _wait_until(lambda: _done(ids) == UPLOADS, timeout=120, what=f"all {UPLOADS} jobs to finish", hosts=pair)
    jobs = Classification.objects.filter(pk__in=ids)
    assert not jobs.exclude(status=ClassificationStatus.DONE).exists()
    assert set(jobs.values_list("gate_version", flat=True)) == {gate.pk}
    assert not jobs.exclude(gate_verdict__in=["exterior", "interior", "other"]).exists()
    exteriors = jobs.filter(gate_verdict="exterior")
    assert exteriors.exists() and set(exteriors.values_list("classifier_version", flat=True)) == {classifier.pk}
    # One set of predictions each: ranks 1..5 for an exterior photo, none for the others.
    ranks: dict = {}
    for job_id, rank in ClassificationPrediction.objects.filter(classification__in=ids).values_list(
        "classification", "rank"
    ):
        ranks.setdefault(job_id, []).append(rank)
    assert {job_id: sorted(r) for job_id, r in ranks.items()} == {job.pk: [1, 2, 3, 4, 5] for job in exteriors}
    # Every job ran; more than once only those the killed host had claimed (a batch per worker thread).
    attempts = list(jobs.values_list("attempts", flat=True))
    assert min(attempts) >= 1 and max(attempts) <= 3, sorted(attempts)
    assert sum(a > 1 for a in attempts) <= WORKER_THREADS * settings.CARSITE_CLASSIFY_CLAIM_BATCH, sorted(attempts)
    # Both hosts fetched the models from the bucket into their own folders; photos never touched their disks.
    for host in pair:
        assert {ModelKind.GATE, ModelKind.CLASSIFIER} <= {p.name for p in (host.root / "models").iterdir()}
        assert not any(p.is_file() for p in (host.root / "media").rglob("*"))
