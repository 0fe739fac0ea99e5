"""Create the catalog's car models from the bundled list of 2023 models (safe to run again)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import services
from catalog.naming import LabelError

DEFAULT_LIST = Path(__file__).resolve().parents[2] / "data" / "catalog_2023.txt"


class Command(BaseCommand):
    help = "Create the car models named in a list of labels ('2023 Audi A4', one a line). Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", default=str(DEFAULT_LIST), help="label list (default: the 2023 list)")

    def handle(self, *args: object, **options: object) -> None:
        path = Path(str(options["path"]))
        try:
            labels = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            result = services.catalog_load(labels)
        except LabelError as exc:
            raise CommandError(f"{path}: {exc}; nothing was loaded.") from None
        if int(options["verbosity"]) >= 2:
            for label in result.created:
                self.stdout.write(f"created {label}", style_func=None)
        self.stdout.write(
            self.style.SUCCESS(f"{len(result.created)} car models created, {len(result.existing)} already there.")
        )
