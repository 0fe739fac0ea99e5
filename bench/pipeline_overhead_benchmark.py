"""What the job pipeline itself costs per job, without the models: claim, decode, write.

    .venv/bin/python bench/pipeline_overhead_benchmark.py [--jobs 400] [--rounds 3]

Creates a temporary PostgreSQL database (``--postgres``), queues ``--jobs`` jobs of one small stored photo
with no model active (so a job is decoded, claimed and written with an empty result), then runs every
job's task in this process, one after another, as a worker thread does. Prints, per job, the CPU time of
this process (Django, psycopg, Pillow) and of its PostgreSQL backend, and the wall time: the part of a
worker's time that is not model compute. Each round queues fresh jobs; the best round counts (the machine
may be shared). Nothing of var/ is touched; the database and media are removed at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="carsite-pipeline-bench-"))
    db_name = f"carsite_pipeline_bench_{os.getpid()}"
    os.environ.update(
        {
            "DATABASE_URL": f"{args.postgres}/{db_name}",
            "CELERY_BROKER_URL": "",
            "MEDIA_ROOT": str(work / "media"),
            "CARSITE_MODELS_DIR": str(work / "models"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "carsite.settings",
        }
    )
    import psycopg

    with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    try:
        import django

        django.setup()
        from django.core.files.base import ContentFile
        from django.core.management import call_command
        from django.db import connection
        from PIL import Image

        from classifier.models import Classification, ClassificationStatus
        from classifier.services.execution import classification_run

        call_command("migrate", verbosity=0)
        photo = io.BytesIO()
        Image.new("RGB", (320, 240), (90, 120, 200)).save(photo, "JPEG")
        template = Classification()
        template.image.save("upload.jpg", ContentFile(photo.getvalue()), save=False)

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        rounds = []
        for _ in range(args.rounds):
            jobs = Classification.objects.bulk_create(
                Classification(image=template.image.name, width=320, height=240) for _ in range(args.jobs)
            )
            ids = [str(job.pk) for job in jobs]
            classification_run(ids[0])  # connection set-up and first plans are not counted
            finished = Classification.objects.filter(pk__in=ids, status=ClassificationStatus.DONE)
            count = len(ids) - finished.count()
            wall, cpu, db_cpu = time.perf_counter(), time.process_time(), backend_cpu_seconds(backend)
            for job_id in ids[1:]:
                classification_run(job_id)
            rounds.append(
                (
                    (time.process_time() - cpu) * 1000 / count,
                    (backend_cpu_seconds(backend) - db_cpu) * 1000 / count,
                    (time.perf_counter() - wall) * 1000 / count,
                )
            )
            done = finished.count()
            if done != len(ids):
                print(f"only {done} of {len(ids)} jobs finished", file=sys.stderr)
                return 1
        best = min(rounds, key=lambda r: r[0] + r[1])
        print("carsite job pipeline overhead (no models; claim + decode + write, one job after another)")
        print(
            f"  {args.jobs} jobs x {args.rounds} rounds, best round: process CPU {best[0]:.2f} ms/job, "
            f"PostgreSQL backend CPU {best[1]:.2f} ms/job, wall {best[2]:.2f} ms/job"
        )
        print(
            "  every round (process CPU / backend CPU / wall, ms/job): "
            + "; ".join(f"{p:.2f} / {b:.2f} / {w:.2f}" for p, b, w in rounds)
            + f"; median wall {statistics.median(r[2] for r in rounds):.2f}"
        )
        return 0
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
