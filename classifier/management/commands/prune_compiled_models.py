"""Remove compiled model graphs that no worker will load again (see ``compiled_graphs_prune``)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from classifier.services.registry import compiled_graphs_prune


class Command(BaseCommand):
    help = (
        "Remove compiled model graphs of model versions no longer registered, of another torch release, and "
        "temporary files of interrupted saves, from CARSITE_COMPILED_MODELS_DIR."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    def handle(self, *args: object, dry_run: bool = False, **options: object) -> None:
        stale = compiled_graphs_prune(dry_run=dry_run)
        for path in stale:
            self.stdout.write(f"{'would remove' if dry_run else 'removed'} {path}")
        verb = "Would free" if dry_run else "Freed"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {len(stale)} files in {settings.CARSITE_COMPILED_MODELS_DIR or '(no directory set)'}."
            )
        )
