"""Give registered model versions their ONNX export (those registered before exports existed)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.models import ModelVersion
from classifier.selectors.registry import model_version_find
from classifier.services.registry import RegistryError, model_version_export


class Command(BaseCommand):
    help = (
        "Export registered model versions to ONNX, for workers to serve on ONNX Runtime (every version without "
        "a usable export, or the given ones). Needs torch."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("versions", nargs="*", help="version ids, unique prefixes or primary keys (default: all)")

    def handle(self, *args: object, **options: object) -> None:
        from ml import require_torch

        try:
            require_torch("Exporting a model to ONNX")
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        try:
            names = options["versions"] or []
            versions = [model_version_find(str(name)) for name in names] or list(ModelVersion.objects.order_by("pk"))
            failed = []
            for version in versions:
                exported = model_version_export(version)
                self.stdout.write(f"  {version}: {exported or 'not exported (see the log)'}")
                if exported is None:
                    failed.append(str(version))
        except (ModelVersion.DoesNotExist, ModelVersion.MultipleObjectsReturned, RegistryError) as exc:
            raise CommandError(str(exc)) from None
        if failed:
            raise CommandError(f"Not exported: {', '.join(failed)}; they are served by torch.")
        self.stdout.write(self.style.SUCCESS(f"{len(versions)} model versions have their ONNX export."))
