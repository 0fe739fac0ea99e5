"""Send a task again for classification jobs whose task message was lost (what Celery beat does every few minutes)."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.services.classification import classifications_requeue_stuck


class Command(BaseCommand):
    help = (
        "Queue the task again for jobs queued or running far longer than they should be (a broker restart, "
        "a dead worker). Safe to repeat: a finished job's task does nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queued-minutes",
            type=float,
            help="queued at least this long (default: CARSITE_CLASSIFY_REQUEUE_QUEUED_AFTER)",
        )
        parser.add_argument(
            "--running-minutes", type=float, help="running at least this long (default: the task time limit + 5)"
        )

    def handle(self, *args: object, **options: object) -> None:
        spans = {}
        for name in ("queued", "running"):
            minutes = options[f"{name}_minutes"]
            if minutes is not None:
                if float(minutes) <= 0:  # type: ignore[arg-type]
                    raise CommandError(f"--{name}-minutes must be more than 0")
                spans[f"{name}_for"] = dt.timedelta(minutes=float(minutes))  # type: ignore[arg-type]
        sent = classifications_requeue_stuck(**spans)
        self.stdout.write(self.style.SUCCESS(f"Queued the task again for {sent} stuck classification jobs."))
