"""Import specifications from a spec CSV export; the work is done by catalog.spec_import."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.spec_import import SpecFileError, SpecImportResult, spec_import_file


class Command(BaseCommand):
    help = (
        "Upsert car specifications from a CSV in the original spec layout. Only car models already in the "
        "catalog are filled unless --create-missing is given; every skipped or rejected row is reported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the spec CSV file")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
        parser.add_argument(
            "--create-missing", action="store_true", help="create car models and manufacturers not in the catalog"
        )

    def handle(self, *args: object, **options: object) -> None:
        path = Path(str(options["path"]))
        try:
            result = spec_import_file(
                path, dry_run=bool(options["dry_run"]), create_missing=bool(options["create_missing"])
            )
        except SpecFileError as exc:
            raise CommandError(f"{exc} Nothing was imported.") from None
        self._report(result, verbosity=int(options["verbosity"]))

    def _report(self, result: SpecImportResult, *, verbosity: int) -> None:
        for row in result.rows:
            if row.outcome in ("skipped", "rejected"):
                self.stdout.write(f"line {row.line}: {row.label}: {row.outcome}: {row.reason}")
                continue
            if row.outcome != "unchanged" and (result.dry_run or verbosity >= 2):
                self.stdout.write(f"line {row.line}: {row.label}: {'would be ' if result.dry_run else ''}{row.outcome}")
                for name, (before, after) in row.changes.items():
                    self.stdout.write(f"    {name}: {_shown(before)} → {_shown(after)}")
            for note in row.notes:
                if verbosity >= 2 or "unknown" in note:
                    self.stdout.write(f"line {row.line}: {row.label}: note: {note}")
        counts = result.counts
        summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
        prefix = "Dry run, nothing written: would have " if result.dry_run else ""
        self.stdout.write(self.style.SUCCESS(f"{prefix}{summary} ({result.source})."))
        if result.models_created:
            self.stdout.write(f"{len(result.models_created)} car models created.")


def _shown(value: object) -> str:
    return "—" if value in (None, "") else str(value)
