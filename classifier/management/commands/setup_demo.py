"""Make the demo work out of the box: an active gate and, given labelled photos, an active classifier."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.demo import ensure_demo_models
from classifier.services.photos import PhotoImportError
from classifier.services.training import TrainingError


class Command(BaseCommand):
    help = "Ensure a gate is active; with labelled demo photos, train (once, cached) and activate a classifier."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--photos", help="labelled photo folder (default: settings.CARSITE_DEMO_PHOTOS_DIR)")
        parser.add_argument("--force", action="store_true", help="retrain the demo classifier even if one is active")

    def handle(self, *args: object, **options: object) -> None:
        try:
            ensure_demo_models(
                Path(str(options["photos"])) if options["photos"] else None,
                force=bool(options["force"]),
                say=self.stdout.write,
            )
        except (TrainingError, PhotoImportError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS("Demo models ready."))
