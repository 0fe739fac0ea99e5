"""Make a registered model version the active one of its kind."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.models import ModelKind, ModelVersion
from classifier.selectors.registry import model_version_find
from classifier.services.registry import RegistryError, model_version_activate


class Command(BaseCommand):
    help = "Activate a model version by its version id (or a unique prefix) or primary key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version", help="version id, unique prefix of one, or primary key")
        parser.add_argument("--kind", choices=ModelKind.values, help="limit the lookup to gates or classifiers")

    def handle(self, *args: object, **options: object) -> None:
        try:
            version = model_version_find(str(options["version"]), kind=options["kind"])  # type: ignore[arg-type]
            version = model_version_activate(version)
        except (ModelVersion.DoesNotExist, ModelVersion.MultipleObjectsReturned, RegistryError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Active {version.kind}: {version}"))
