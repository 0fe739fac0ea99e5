"""Fault benchmark: broker and database outages and a killed worker, on services of its own.

    .venv/bin/python bench/fault_benchmark.py [--photos 6] [--deadline 240]

Starts, in a temporary directory, everything it uses and removes it all at the end: a PostgreSQL cluster
(initdb + pg_ctl, on a free port), a redis-server (free port) reached through a small TCP relay that can
black-hole or refuse, gunicorn, a Celery worker (threads pool) and Celery beat, a zero-shot gate bundle
and a few small photos. Never touches the shared PostgreSQL or Redis. For each fault it prints the upload
answer times (target <= 3 s; 503 while PostgreSQL is down is the right answer), jobs lost (0), jobs run
twice (0) and the time from the service being back (the worker's death for d) until every job is done
once (target <= 2 min after the worker's death):

(a) the broker black-holes (accepts connections, never answers)   (b) the broker refuses connections
(c) PostgreSQL is stopped                                         (d) the worker is SIGKILLed mid-job
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import http.client
import io
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PYTHON = sys.executable
# The worker sleeps this long in every job, so a job is surely running when it is killed.
JOB_DELAY_MS = 3000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Relay:
    """Listens on the broker's port and forwards to redis-server; or black-holes, or refuses (nothing listening)."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target, self.mode = port, target, "forward"
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(client)
                mode = self.mode
            if mode == "forward":
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    client.close()
                    continue
                with self.lock:
                    self.connections.append(upstream)
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            # black hole: keep the connection open and never read from it

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                if self.mode != "forward":
                    return  # stop answering; the sockets stay open until the mode changes
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peers[sock].sendall(data)
        except OSError:
            a.close()
            b.close()

    def _drop_connections(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.close()

    def set(self, mode: str) -> None:
        """forward | blackhole | refuse. Connections made under the previous mode are closed when it ends."""
        with self.lock:
            previous, self.mode = self.mode, mode
        if mode == "refuse" and self.listener is not None:
            self.listener.close()
            self.listener = None
        if previous != "forward" or mode == "refuse":
            self._drop_connections()
        if mode != "refuse" and self.listener is None:
            self._listen()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self._drop_connections()


def photo(index: int) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (320, 240), ((index * 53) % 256, (index * 97) % 256, (index * 31) % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def multipart(data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="car.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


def as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command]


def wait_until_one_runs(ids: list[str], timeout: float = 60.0) -> bool:
    """Wait until a worker has claimed one of the jobs ``ids``; False when none is claimed in time."""
    from classifier.models import Classification, ClassificationStatus

    started = time.monotonic()
    while not Classification.objects.filter(pk__in=ids, status=ClassificationStatus.RUNNING).exists():
        if time.monotonic() - started > timeout:
            return False
        time.sleep(0.05)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6, help="uploads during each fault")
    parser.add_argument("--deadline", type=float, default=240, help="seconds to wait for the jobs once back")
    parser.add_argument("--outage", type=float, default=10, help="seconds each outage lasts after the uploads")
    args = parser.parse_args()

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        print("PostgreSQL's initdb not found under /usr/lib/postgresql/*/bin", file=sys.stderr)
        return 2
    pg_bin = Path(bins[-1]).parent
    work = Path(tempfile.mkdtemp(prefix="carsite-fault-bench-"))
    work.chmod(0o755)
    # Everything PostgreSQL writes lives in a folder of its own user.
    pg_home = work / "pg"
    pg_home.mkdir()
    shutil.chown(pg_home, "postgres")
    pg_data, pg_sock, pg_log = pg_home / "data", pg_home, pg_home / "server.log"
    pg_port, redis_port, broker_port, web_port = free_port(), free_port(), free_port(), free_port()
    processes: list[subprocess.Popen] = []
    relay: Relay | None = None
    pg_started = False

    def pg_ctl(action: str) -> None:
        subprocess.run(
            as_postgres(
                str(pg_bin / "pg_ctl"),
                "-D",
                str(pg_data),
                "-l",
                str(pg_log),
                "-w",
                "-m",
                "fast",
                "-o",
                f"-p {pg_port} -k {pg_sock} -c listen_addresses=127.0.0.1",
                action,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    try:
        subprocess.run(
            as_postgres(str(pg_bin / "initdb"), "-D", str(pg_data), "-U", "postgres", "--auth=trust"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        pg_ctl("start")
        pg_started = True
        subprocess.run(
            as_postgres(str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "carsite"), check=True
        )
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
            ],
            stdout=(work / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(redis)
        relay = Relay(broker_port, redis_port)

        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/carsite",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{broker_port}/0",
            "CACHE_URL": "",
            "MEDIA_ROOT": str(work / "media"),
            "CARSITE_MODELS_DIR": str(work / "models"),
            "STATIC_ROOT": str(work / "static"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_COOKIES": "0",
            "CLASSIFY_ANON_RATE": "1000000/minute",
            "CARSITE_INFERENCE_THREADS": "1",
            "CARSITE_CLASSIFY_TEST_DELAY_MS": str(JOB_DELAY_MS),
            "LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "carsite.settings"
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        from classifier.models import Classification, ClassificationStatus
        from classifier.services.registry import model_version_activate, model_version_register
        from ml.gate import build_zero_shot_gate

        model_version_activate(model_version_register(build_zero_shot_gate(work / "gate-bundle")))
        connections.close_all()

        logs = work / "logs"
        logs.mkdir()

        def start(name: str, command: list[str]) -> subprocess.Popen:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=(logs / f"{name}.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(process)
            return process

        start(
            "gunicorn",
            [
                PYTHON,
                "-m",
                "gunicorn",
                "carsite.wsgi",
                "-b",
                f"127.0.0.1:{web_port}",
                "-w",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "30",
                "--log-level",
                "warning",
            ],
        )

        def start_worker(name: str) -> subprocess.Popen:
            return start(
                name,
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "carsite",
                    "worker",
                    "-Q",
                    "default,ml",
                    "--pool",
                    "threads",
                    "-c",
                    "3",
                    "-l",
                    "warning",
                    "-n",
                    f"{name}-{os.getpid()}@%h",
                ],
            )

        worker = start_worker("worker-1")
        start(
            "beat",
            [PYTHON, "-m", "celery", "-A", "carsite", "beat", "-l", "warning", "-s", str(work / "beat-schedule")],
        )

        def call(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", web_port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        for _ in range(300):
            try:
                if call("GET", "/classify/")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            print("gunicorn did not start:\n" + (logs / "gunicorn.log").read_text()[-3000:], file=sys.stderr)
            return 2

        counter = iter(range(10**6))

        def upload() -> tuple[float, int, str]:
            content_type, body = multipart(photo(next(counter)))
            started = time.perf_counter()
            status, content = call("POST", "/api/v1/classifications/", body, {"Content-Type": content_type})
            elapsed = time.perf_counter() - started
            job_id = json.loads(content)["id"] if status == 202 else ""
            return elapsed, status, job_id

        def wait_done(ids: list[str], deadline: float) -> float | None:
            """Seconds until every job is done (None: not by the deadline); polls the database directly."""
            started = time.monotonic()
            while time.monotonic() - started < deadline:
                try:
                    done = Classification.objects.filter(pk__in=ids, status=ClassificationStatus.DONE).count()
                except Exception:  # the database is still starting
                    connections.close_all()
                    done = -1
                if done == len(ids):
                    return time.monotonic() - started
                time.sleep(0.25)
            return None

        def run_twice(ids: list[str], interrupted: set[str]) -> int:
            """Jobs claimed more often than they needed: once, plus once more if a killed worker held them."""
            attempts = dict(Classification.objects.filter(pk__in=ids).values_list("pk", "attempts"))
            return sum(1 for pk, n in attempts.items() if n > 1 + (str(pk) in interrupted))

        # Warm: the worker has loaded the gate and answers.
        _, status, first = upload()
        if status != 202 or wait_done([first], 180) is None:
            print("the worker did not finish a first job:\n" + (logs / "worker-1.log").read_text()[-3000:])
            return 2

        results = []

        def report(
            name: str, answers: list[tuple[float, int, str]], back_at: float, interrupted: set[str], expect: int = 202
        ) -> None:
            ids = [job_id for _, status, job_id in answers if status == 202]
            done_after = wait_done(ids, args.deadline)
            waited = time.monotonic() - back_at
            statuses = sorted({status for _, status, _ in answers})
            lost = len(ids) - Classification.objects.filter(pk__in=ids, status=ClassificationStatus.DONE).count()
            line = {
                "fault": name,
                "answers": statuses,
                "answer_max_s": round(max(elapsed for elapsed, _, _ in answers), 2),
                "expected": expect,
                "jobs": len(ids),
                "lost": lost,
                "run_twice": run_twice(ids, interrupted),
                "done_after_back_s": None if done_after is None else round(waited if ids else 0.0, 1),
            }
            results.append(line)
            print(json.dumps(line), flush=True)

        # (a) and (b): the broker black-holes, then refuses; the uploads must still answer, and their jobs run
        # once it is back (the periodic requeue sends the tasks that could not be sent).
        for name, mode in (("a broker black-holes", "blackhole"), ("b broker refuses", "refuse")):
            relay.set(mode)
            answers = [upload() for _ in range(args.photos)]
            time.sleep(args.outage)
            relay.set("forward")
            report(name, answers, time.monotonic(), set())

        # (c) PostgreSQL stopped while jobs are in the worker: uploads answer 503; the jobs queued before finish.
        before = [upload() for _ in range(args.photos)]
        ids = [job_id for _, _, job_id in before]
        if not wait_until_one_runs(ids):
            print("no job started", file=sys.stderr)
            return 2
        # A job running when the database goes away cannot write its result: it is redone once more.
        interrupted = {
            str(pk)
            for pk in Classification.objects.filter(pk__in=ids, status=ClassificationStatus.RUNNING).values_list(
                "pk", flat=True
            )
        }
        connections.close_all()
        pg_ctl("stop")
        during = [upload() for _ in range(args.photos)]
        time.sleep(args.outage)
        pg_ctl("start")
        back = time.monotonic()
        print(
            json.dumps(
                {
                    "fault": "c uploads while PostgreSQL is down",
                    "answers": sorted({s for _, s, _ in during}),
                    "answer_max_s": round(max(e for e, _, _ in during), 2),
                    "expected": 503,
                }
            ),
            flush=True,
        )
        print(json.dumps({"fault": "c PostgreSQL stopped", "running_at_stop": len(interrupted)}), flush=True)
        report("c PostgreSQL stopped (jobs uploaded just before)", before, back, interrupted)

        # (d) The worker is SIGKILLed mid-job; a fresh one starts. The dead worker's jobs are redone once
        # their lease expires (the requeue), not at Redis's visibility timeout (2 h).
        answers = [upload() for _ in range(args.photos)]
        ids = [job_id for _, _, job_id in answers]
        if not wait_until_one_runs(ids):
            print("no job started", file=sys.stderr)
            return 2
        os.killpg(worker.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        worker.wait()
        interrupted = {
            str(pk)
            for pk in Classification.objects.filter(pk__in=ids, status=ClassificationStatus.RUNNING).values_list(
                "pk", flat=True
            )
        }
        print(json.dumps({"fault": "d worker killed", "running_at_kill": len(interrupted)}), flush=True)
        start_worker("worker-2")
        report("d worker SIGKILLed mid-job (time from its death)", answers, killed_at, interrupted)

        ok = all(
            line["lost"] == 0
            and line["run_twice"] == 0
            and line["answer_max_s"] <= 3
            and line["done_after_back_s"] is not None
            for line in results
        )
        print("all targets met" if ok else "SOME TARGETS MISSED")
        return 0 if ok else 1
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if relay is not None:
            relay.close()
        if pg_started:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            subprocess.run(
                as_postgres(str(pg_bin / "pg_ctl"), "-D", str(pg_data), "-w", "-m", "fast", "stop"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(work, ignore_errors=True)
        if work.exists():
            print(f"could not remove {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
