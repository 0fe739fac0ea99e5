"""Import car specifications from the original pipeline's CSV export.

The layout (see the shared data README): an unnamed first column holding the label, then Make,
Model, Year, MSRP, wheel size, displacement without its decimal point, engine words, dimensions,
drivetrain, seats, doors, body style, horsepower rounded down to tens and city/highway MPG.

Each row is parsed into typed values first; a row that does not parse is rejected as a whole.
Each accepted row is written in its own atomic block, so a row's car model and specification
change together or not at all. ``spec_import`` with ``dry_run=True`` runs everything inside a
transaction that is rolled back, so the report is exact and nothing is written.
"""

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from catalog import normalize, services
from catalog.models import CarModel
from catalog.naming import CarName, LabelError, clean_text, official_make, parse_label

COLUMN_LABEL = ""
COLUMN_MAKE = "Make"
COLUMN_MODEL = "Model"
COLUMN_YEAR = "Year"
COLUMN_MSRP = "MSRP"
COLUMN_WHEEL = "Front Wheel Size (in)"
COLUMN_DISPLACEMENT = "Displacement"
COLUMN_ENGINE = "Engine Type"
COLUMN_WIDTH = "Width, Max w/o mirrors (in)"
COLUMN_HEIGHT = "Height, Overall (in)"
COLUMN_LENGTH = "Length, Overall (in)"
COLUMN_DRIVETRAIN = "Drivetrain"
COLUMN_SEATS = "Passenger Capacity"
COLUMN_DOORS = "Passenger Doors"
COLUMN_BODY = "Body Style"
COLUMN_HORSEPOWER = "Net Horsepower"
COLUMN_MPG_CITY = "City Gas Mileage (mpg)"
COLUMN_MPG_HIGHWAY = "Highway Gas Mileage (mpg)"
# Not in the CSV export; rows made from photo file names carry it.
COLUMN_CYLINDERS = "Cylinders"

EXPECTED_COLUMNS: tuple[str, ...] = (
    COLUMN_LABEL,
    COLUMN_MAKE,
    COLUMN_MODEL,
    COLUMN_YEAR,
    COLUMN_MSRP,
    COLUMN_WHEEL,
    COLUMN_DISPLACEMENT,
    COLUMN_ENGINE,
    COLUMN_WIDTH,
    COLUMN_HEIGHT,
    COLUMN_LENGTH,
    COLUMN_DRIVETRAIN,
    COLUMN_SEATS,
    COLUMN_DOORS,
    COLUMN_BODY,
    COLUMN_HORSEPOWER,
    COLUMN_MPG_CITY,
    COLUMN_MPG_HIGHWAY,
)
# Columns that carry figures; a row with all of them blank holds nothing but its name.
DATA_COLUMNS = EXPECTED_COLUMNS[4:]

# Specification fields parsed from a row (body style and MSRP belong to the car model).
_INTEGER_SPEC_COLUMNS = {
    COLUMN_SEATS: "seats",
    COLUMN_DOORS: "doors",
    COLUMN_HORSEPOWER: "horsepower",
    COLUMN_MPG_CITY: "mpg_city",
    COLUMN_MPG_HIGHWAY: "mpg_highway",
}
_DECIMAL_SPEC_COLUMNS = {
    COLUMN_WHEEL: "front_wheel_size_in",
    COLUMN_WIDTH: "width_in",
    COLUMN_HEIGHT: "height_in",
    COLUMN_LENGTH: "length_in",
}


class SpecFileError(Exception):
    """The file as a whole cannot be imported (unreadable, not CSV, wrong header)."""


class RowError(ValueError):
    """One row cannot be imported; the message says why."""


@dataclass
class ParsedRow:
    line: int
    name: CarName
    car_model_fields: dict[str, Any]
    spec_values: dict[str, Any]
    raw: dict[str, str]
    notes: list[str] = field(default_factory=list)


@dataclass
class RowReport:
    line: int
    label: str
    outcome: str  # created | updated | unchanged | skipped | rejected
    reason: str = ""
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class SpecImportResult:
    source: str
    dry_run: bool
    rows: list[RowReport] = field(default_factory=list)

    def with_outcome(self, outcome: str) -> list[RowReport]:
        return [row for row in self.rows if row.outcome == outcome]

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("created", "updated", "unchanged", "skipped", "rejected"), 0)
        for row in self.rows:
            counts[row.outcome] += 1
        return counts

    @property
    def models_created(self) -> list[str]:
        return [row.label for row in self.rows if "car model created" in row.notes]


def _clean(value: str | None) -> str:
    return clean_text(value or "")


def _is_placeholder(value: str) -> bool:
    # The export writes unknown figures as "- ", "- TB" or "- TBD -".
    return value.startswith("-") and not value[1:2].isdigit()


def _parse_int(column: str, value: str, notes: list[str]) -> int | None:
    if not value:
        return None
    if _is_placeholder(value):
        notes.append(f"{column}: {value!r} means unknown, left empty")
        return None
    if not value.isdigit():
        raise RowError(f"{column}: {value!r} is not a whole non-negative number")
    return int(value)


def _parse_decimal(column: str, value: str, notes: list[str]) -> Decimal | None:
    if not value:
        return None
    if _is_placeholder(value):
        notes.append(f"{column}: {value!r} means unknown, left empty")
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise RowError(f"{column}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise RowError(f"{column}: {value!r} is not a non-negative number")
    return number.quantize(Decimal("0.1"))


def _parse_displacement(value: str, notes: list[str]) -> Decimal | None:
    # The original dropped the decimal point: "35" is 3.5 L, "20" is 2.0 L.
    tenths = _parse_int(COLUMN_DISPLACEMENT, value, notes)
    if tenths is None:
        return None
    return (Decimal(tenths) / 10).quantize(Decimal("0.1"))


def _parse_choice(column: str, value: str, normaliser: Any) -> str | None:
    if not value:
        return None
    choice = normaliser(value)
    if choice is None:
        raise RowError(f"{column}: {value!r} is not a known value")
    return str(choice)


def _car_name(row: dict[str, str]) -> tuple[CarName, list[str]]:
    """The car a row describes: its Year/Make/Model columns, else its label.

    The columns win because the label column carries the original's cleaning bug ("2022 Volkswagen
    ID" for the ID.4) while its Model column is right.
    """
    notes: list[str] = []
    label = _clean(row.get(COLUMN_LABEL))
    make, model, year = _clean(row.get(COLUMN_MAKE)), _clean(row.get(COLUMN_MODEL)), _clean(row.get(COLUMN_YEAR))
    if make and model and year:
        if not (year.isdigit() and len(year) == 4):
            raise RowError(f"{COLUMN_YEAR}: {year!r} is not a four-digit year")
        name = CarName(make=official_make(make), model=model, year=int(year))
        if label and parse_label_or_none(label) != name:
            notes.append(f"label {label!r} read as {name.label!r} from the Make/Model/Year columns")
        return name, notes
    if not label:
        raise RowError("no label and no Make/Model/Year")
    try:
        return parse_label(label), notes
    except LabelError as exc:
        raise RowError(str(exc)) from None


def parse_label_or_none(label: str) -> CarName | None:
    try:
        return parse_label(label)
    except LabelError:
        return None


def parse_row(line: int, row: dict[str, str]) -> ParsedRow:
    """Typed values of one CSV row; raises RowError when any figure cannot be read."""
    name, notes = _car_name(row)
    values = {column: _clean(row.get(column)) for column in DATA_COLUMNS}
    spec: dict[str, Any] = {}
    for column, field_name in _INTEGER_SPEC_COLUMNS.items():
        spec[field_name] = _parse_int(column, values[column], notes)
    for column, field_name in _DECIMAL_SPEC_COLUMNS.items():
        spec[field_name] = _parse_decimal(column, values[column], notes)
    spec["displacement_l"] = _parse_displacement(values[COLUMN_DISPLACEMENT], notes)
    spec["engine_type"] = _parse_choice(COLUMN_ENGINE, values[COLUMN_ENGINE], normalize.engine_type) or ""
    spec["engine_description"] = values[COLUMN_ENGINE][:100]
    spec["drivetrain"] = _parse_choice(COLUMN_DRIVETRAIN, values[COLUMN_DRIVETRAIN], normalize.drivetrain) or ""
    if COLUMN_CYLINDERS in row:
        spec["cylinders"] = _parse_int(COLUMN_CYLINDERS, _clean(row[COLUMN_CYLINDERS]), notes)
    # The export rounds horsepower down to tens: keep the figure, flag it as approximate.
    spec["horsepower_approximate"] = spec["horsepower"] is not None
    car_model_fields: dict[str, Any] = {
        "msrp_usd": _parse_int(COLUMN_MSRP, values[COLUMN_MSRP], notes),
        "body_style": _parse_choice(COLUMN_BODY, values[COLUMN_BODY], normalize.body_style) or "",
    }
    raw = {(column or "label"): (value or "") for column, value in row.items() if column is not None}
    return ParsedRow(line=line, name=name, car_model_fields=car_model_fields, spec_values=spec, raw=raw, notes=notes)


def read_rows(text: str) -> Iterable[tuple[int, dict[str, str]]]:
    """(line number, row) for every data row; raises SpecFileError for a file of the wrong shape."""
    if "\x00" in text:
        raise SpecFileError("The file is binary, not CSV text.")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise SpecFileError("The file is empty.") from None
    except csv.Error as exc:
        raise SpecFileError(f"The file is not valid CSV: {exc}") from None
    header = [column.strip() for column in header]
    missing = [column or "(unnamed label column)" for column in EXPECTED_COLUMNS if column not in header]
    if missing or not header or header[0] != COLUMN_LABEL:
        if not missing:
            missing = ["(unnamed label column first)"]
        raise SpecFileError(f"The header is not the spec layout; missing: {', '.join(missing)}.")
    if len(set(header)) != len(header):
        raise SpecFileError("The header names a column twice.")
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                problem = f"has {len(record)} cells, the header has {len(header)}"
                rows.append((line, {COLUMN_LABEL: record[0] if record else "", "__error__": problem}))
                continue
            rows.append((line, dict(zip(header, record, strict=True))))
    except csv.Error as exc:
        raise SpecFileError(f"The file is not valid CSV at line {reader.line_num}: {exc}") from None
    return rows


def read_file(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecFileError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise SpecFileError(f"{path} is binary, not CSV text.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecFileError(f"{path} is not UTF-8 text.") from None


def _spec_changes(car_model: CarModel, parsed: ParsedRow) -> dict[str, tuple[Any, Any]]:
    changes: dict[str, tuple[Any, Any]] = {}
    for name, value in parsed.car_model_fields.items():
        before = getattr(car_model, name)
        if before != value:
            changes[name] = (before, value)
    spec = getattr(car_model, "specs", None) if car_model.pk else None
    for name, value in parsed.spec_values.items():
        before = getattr(spec, name) if spec is not None else None
        if before != value and not (spec is None and value in (None, "", False)):
            changes[name] = (before, value)
    return changes


def _apply_row(
    parsed: ParsedRow, *, source: str, create_missing: bool, catalog_ids: dict[str, int], approximate: bool
) -> RowReport:
    label = parsed.name.label
    report = RowReport(line=parsed.line, label=label, outcome="unchanged", notes=list(parsed.notes))
    # One query for the whole catalog up front: most rows of an export are for models not in it.
    car_model_id = catalog_ids.get(label.lower())
    car_model = None
    if car_model_id is not None or create_missing:
        car_model = CarModel.objects.select_related("specs").filter(label__iexact=label).first()
    if car_model is None and not create_missing:
        report.outcome, report.reason = "skipped", "car model not in the catalog (use --create-missing)"
        return report
    spec = getattr(car_model, "specs", None) if car_model is not None else None
    if approximate and spec is not None and spec.source != source:
        # Rough figures never replace a spec sheet's or a curator's.
        report.outcome, report.reason = "skipped", f"has specifications from {spec.source or 'elsewhere'}"
        return report
    parsed.spec_values["approximate"] = approximate
    with transaction.atomic():
        created = False
        if car_model is None:
            # Created with its fields in one validated save rather than created, then validated and saved again.
            car_model, created = services.car_model_get_or_create(
                make=parsed.name.make, model=parsed.name.model, year=parsed.name.year, defaults=parsed.car_model_fields
            )
            report.notes.append("car model created")
            had_spec = False
        else:
            had_spec = hasattr(car_model, "specs")
        # A car model created just now is compared as the blank one it started from.
        report.changes = _spec_changes(CarModel() if created else car_model, parsed)
        model_changes = {
            name: value for name, value in parsed.car_model_fields.items() if getattr(car_model, name) != value
        }
        if model_changes:
            services.car_model_update(car_model, **model_changes)
        _, changed = services.specification_upsert(car_model, values=parsed.spec_values, raw=parsed.raw, source=source)
    if not had_spec:
        report.outcome = "created"
    elif report.changes or model_changes or changed:
        report.outcome = "updated"
    return report


def spec_import(
    rows: Iterable[tuple[int, dict[str, str]]],
    *,
    source: str,
    dry_run: bool = False,
    create_missing: bool = False,
    approximate: bool = False,
) -> SpecImportResult:
    """Upsert the specifications of ``rows`` (from ``read_rows``); every row gets a report.

    ``approximate`` rows (read from photo file names) only fill car models without specifications, or
    whose specifications came from the same source; a spec sheet's figures clear the mark."""
    result = SpecImportResult(source=source, dry_run=dry_run)
    seen: dict[str, int] = {}
    catalog_ids = {label.lower(): pk for pk, label in CarModel.objects.values_list("pk", "label")}

    def run() -> None:
        for line, row in rows:
            label = _clean(row.get(COLUMN_LABEL)) or f"line {line}"
            if "__error__" in row:
                result.rows.append(RowReport(line, label, "rejected", f"malformed row: {row['__error__']}"))
                continue
            if not any(_clean(row.get(column)) for column in DATA_COLUMNS):
                result.rows.append(RowReport(line, label, "skipped", "row is empty but for its name"))
                continue
            try:
                parsed = parse_row(line, row)
            except RowError as exc:
                result.rows.append(RowReport(line, label, "rejected", str(exc)))
                continue
            first_line = seen.setdefault(parsed.name.label.lower(), line)
            if first_line != line:
                result.rows.append(
                    RowReport(line, parsed.name.label, "skipped", f"same car model as line {first_line}")
                )
                continue
            try:
                result.rows.append(
                    _apply_row(
                        parsed,
                        source=source,
                        create_missing=create_missing,
                        catalog_ids=catalog_ids,
                        approximate=approximate,
                    )
                )
            except (ValidationError, ValueError, DatabaseError) as exc:
                # The row's atomic block has already been rolled back: nothing of it is written.
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                result.rows.append(RowReport(line, parsed.name.label, "rejected", message))

    if dry_run:
        with transaction.atomic():
            run()
            transaction.set_rollback(True)
    else:
        run()
    return result


def spec_import_file(
    path: Path,
    *,
    dry_run: bool = False,
    create_missing: bool = False,
    progress: Callable[[Iterable[tuple[int, dict[str, str]]]], Iterable[tuple[int, dict[str, str]]]] | None = None,
) -> SpecImportResult:
    """Read and import one spec CSV; raises SpecFileError before writing anything if it is malformed.

    ``progress`` wraps the rows as they are imported (a progress bar, say)."""
    path = Path(path)
    rows = read_rows(read_file(path))
    if progress is not None:
        rows = progress(rows)
    return spec_import(rows, source=f"csv:{path.name}", dry_run=dry_run, create_missing=create_missing)


# The Car Connection's photo names: Make_Model_Year_MSRP($k)_Wheel_HP_Displacement_Cylinders_Width_Height_
# Length_MPG_Drivetrain_Seats_Doors_Body_xyz.jpg, with the CSV's conventions (displacement without its
# decimal point, horsepower rounded down to tens; the MPG is the city figure).
FILE_NAME_SOURCE = "photo file names"
_FILE_NAME_COLUMNS = (
    COLUMN_MAKE, COLUMN_MODEL, COLUMN_YEAR, COLUMN_MSRP, COLUMN_WHEEL, COLUMN_HORSEPOWER, COLUMN_DISPLACEMENT,
    COLUMN_CYLINDERS, COLUMN_WIDTH, COLUMN_HEIGHT, COLUMN_LENGTH, COLUMN_MPG_CITY, COLUMN_DRIVETRAIN, COLUMN_SEATS,
    COLUMN_DOORS, COLUMN_BODY,
)  # fmt: skip


def file_name_row(file_name: str) -> dict[str, str] | None:
    """The spec-CSV row a photo's file name stands for, or None if the name does not follow the scheme."""
    parts = Path(file_name).stem.split("_")
    if len(parts) != len(_FILE_NAME_COLUMNS) + 1:
        return None
    row = dict.fromkeys(EXPECTED_COLUMNS, "") | dict(zip(_FILE_NAME_COLUMNS, parts, strict=False))
    if row[COLUMN_MSRP].isdigit():
        row[COLUMN_MSRP] = str(int(row[COLUMN_MSRP]) * 1000)
    row[COLUMN_LABEL] = f"{row[COLUMN_YEAR]} {row[COLUMN_MAKE]} {row[COLUMN_MODEL]}"
    return row


def specs_from_file_names(file_names: Iterable[str], *, dry_run: bool = False) -> SpecImportResult:
    """Fill the specifications of car models that have none from their photos' names (one name per car)."""
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    for number, name in enumerate(file_names, start=1):
        row = file_name_row(name)
        if row is not None:
            rows.setdefault(row[COLUMN_LABEL].lower(), (number, row))
    return spec_import(rows.values(), source=FILE_NAME_SOURCE, dry_run=dry_run, approximate=True)
