"""Import specifications from a spec CSV export; the work is done by catalog.spec_import."""

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.spec_import import RowReport, SpecFileError, SpecImportResult, spec_import_file

EXAMPLES_PER_KIND = 3


class Command(BaseCommand):
    help = (
        "Upsert car specifications from a CSV in the original spec layout. Only car models already in the "
        "catalog are filled unless --create-missing is given. Prints a summary; every row's outcome goes to "
        "the report file (and to the screen with -v 2 or --dry-run)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the spec CSV file")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
        parser.add_argument(
            "--create-missing", action="store_true", help="create car models and manufacturers not in the catalog"
        )
        parser.add_argument("--report", help="where to write the full report (default: var/reports/)")

    def handle(self, *args: object, **options: object) -> None:
        path = Path(str(options["path"]))
        try:
            result = spec_import_file(
                path,
                dry_run=bool(options["dry_run"]),
                create_missing=bool(options["create_missing"]),
                progress=_progress_bar,
            )
        except SpecFileError as exc:
            raise CommandError(f"{exc} Nothing was imported.") from None
        lines = report_lines(result)
        report = Path(str(options["report"])) if options["report"] else default_report_path()
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if result.dry_run or int(options["verbosity"]) >= 2:
            for line in lines:
                self.stdout.write(line)
        else:
            self._summarise_problems(result)
        counts = ", ".join(f"{count} {outcome}" for outcome, count in result.counts.items())
        prefix = "Dry run, nothing written: would have " if result.dry_run else ""
        created = f"; {len(result.models_created)} car models created" if result.models_created else ""
        self.stdout.write(self.style.SUCCESS(f"{prefix}{counts} ({result.source}){created}."))
        self.stdout.write(f"Full report: {report}")

    def _summarise_problems(self, result: SpecImportResult) -> None:
        """Each kind of skip, rejection or note once, with its count and its first few rows."""
        kinds: dict[str, list[str]] = defaultdict(list)
        for row in result.rows:
            if row.outcome in ("skipped", "rejected"):
                kinds[f"{row.outcome}: {_kind(row.reason)}"].append(_row_line(row, f"{row.outcome}: {row.reason}"))
            for note in row.notes:
                if "unknown" in note:
                    kinds[f"note: {_kind(note)}"].append(_row_line(row, f"note: {note}"))
        for kind, examples in kinds.items():
            more = f" (first {EXAMPLES_PER_KIND} shown)" if len(examples) > EXAMPLES_PER_KIND else ""
            self.stdout.write(f"{len(examples)} × {kind}{more}")
            for example in examples[:EXAMPLES_PER_KIND]:
                self.stdout.write(f"    {example}")


def report_lines(result: SpecImportResult) -> list[str]:
    """Every row that is not unchanged: its outcome or reason, its changes and its notes."""
    lines = []
    for row in result.rows:
        if row.outcome in ("skipped", "rejected"):
            lines.append(_row_line(row, f"{row.outcome}: {row.reason}"))
            continue
        if row.outcome != "unchanged":
            lines.append(_row_line(row, f"{'would be ' if result.dry_run else ''}{row.outcome}"))
            for name, (before, after) in row.changes.items():
                lines.append(f"    {name}: {_shown(before)} → {_shown(after)}")
        lines.extend(_row_line(row, f"note: {note}") for note in row.notes)
    return lines


def _progress_bar(rows: Iterable[Any]) -> Iterable[Any]:
    # On a terminal only (tqdm turns itself off otherwise).
    return tqdm(rows, desc="Importing specifications", unit=" rows", disable=None, leave=False)


def default_report_path() -> Path:
    return Path(settings.VAR_DIR) / "reports" / f"import_specs-{datetime.now():%Y%m%d-%H%M%S}.txt"


def _row_line(row: RowReport, text: str) -> str:
    return f"line {row.line}: {row.label}: {text}"


def _kind(text: str) -> str:
    """The reason without its particulars (quoted values, line numbers), so like rows group together."""
    return re.sub(r"'[^']*'", "'…'", re.sub(r"\bline \d+", "line …", text))


def _shown(value: object) -> str:
    return "—" if value in (None, "") else str(value)
