"""Send a task again for classification jobs whose task message was lost (what Celery beat does every 30 s)."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.services.execution import classifications_requeue_stuck


class Command(BaseCommand):
    help = (
        "Queue the task again for jobs whose task could not be sent, jobs queued far longer than they should be "
        "(a broker restart) and running jobs whose lease expired (a dead worker). Safe to repeat: a finished "
        "job's task does nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queued-minutes",
            type=float,
            help="queued at least this long (default: CARSITE_CLASSIFY_REQUEUE_QUEUED_AFTER)",
        )

    def handle(self, *args: object, **options: object) -> None:
        minutes = options["queued_minutes"]
        queued_for = None
        if minutes is not None:
            if float(minutes) <= 0:  # type: ignore[arg-type]
                raise CommandError("--queued-minutes must be more than 0")
            queued_for = dt.timedelta(minutes=float(minutes))  # type: ignore[arg-type]
        sent = classifications_requeue_stuck(queued_for=queued_for)
        self.stdout.write(self.style.SUCCESS(f"Queued the task again for {sent} stuck classification jobs."))
