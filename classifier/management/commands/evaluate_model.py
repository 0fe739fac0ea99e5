"""Re-evaluate a registered model version and print its classification report."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.models import ModelKind, ModelVersion
from classifier.selectors.registry import model_version_find
from classifier.services.training import TrainingError, model_version_evaluate


class Command(BaseCommand):
    help = "Score a model version on its held-out test split (or on --manifest) and print the report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version", help="version id, unique prefix of one, or primary key")
        parser.add_argument("--kind", choices=ModelKind.values)
        parser.add_argument("--manifest", help="CSV with path,label[,group] columns to evaluate on")
        parser.add_argument("--output", help="folder for the report files (default: under CARSITE_MODELS_DIR)")

    def handle(self, *args: object, **options: object) -> None:
        try:
            version = model_version_find(str(options["version"]), kind=options["kind"])  # type: ignore[arg-type]
            outcome = model_version_evaluate(
                version,
                manifest=Path(str(options["manifest"])) if options["manifest"] else None,
                out_dir=Path(str(options["output"])) if options["output"] else None,
            )
        except (ModelVersion.DoesNotExist, ModelVersion.MultipleObjectsReturned, TrainingError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(outcome.report_markdown)
        for reason, count in outcome.skipped.items():
            self.stdout.write(f"skipped {count} records: {reason}")
        self.stdout.write(json.dumps(outcome.metrics, indent=2, default=str))
        self.stdout.write(
            self.style.SUCCESS(f"Evaluated {version} on {outcome.evaluated} images; report in {outcome.report_dir}")
        )
