"""``manage.py import_specs``: the shared spec CSV, dry runs, --create-missing and malformed input."""

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog import services
from catalog.models import CarModel, EngineType, Manufacturer, Specification
from catalog.spec_import import EXPECTED_COLUMNS, spec_import_file

pytestmark = pytest.mark.django_db

# The real export's header, trailing space included.
HEADER = [*EXPECTED_COLUMNS[:-1], EXPECTED_COLUMNS[-1] + " "]
MDX = ["2023 Acura MDX", "Acura", "MDX", "2023", "49550", "19", "35", "Gas", "78.7", "67.1", "198.4", "FWD", "7", "4",
       "SUV", "290", "19", "26 "]  # fmt: skip
EV = ["2023 Audi E-Tron GT", "Audi", "E-Tron GT", "2023", "104900", "20", "", "Electric", "77.3", "55.6", "196.4",
      "AWD", "5", "4", "4dr", "460", "", ""]  # fmt: skip


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def _reports_in_tmp(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("import_specs", *args, stdout=out)
    return out.getvalue()


def full_report(output: str) -> str:
    path = next(line.removeprefix("Full report: ") for line in output.splitlines() if line.startswith("Full report: "))
    return Path(path).read_text(encoding="utf-8")


def test_shared_csv_fills_the_catalog(loaded_catalog, specs_csv):
    output = run(str(specs_csv))
    assert "174 created, 0 updated, 0 unchanged" in output
    assert Specification.objects.count() == 174
    assert CarModel.objects.count() == 174, "rows for other years are skipped, not created"

    mdx = CarModel.objects.select_related("specs").get(label="2023 Acura MDX")
    spec = mdx.specs
    assert (mdx.msrp_usd, mdx.body_style) == (49550, "suv")
    assert spec.front_wheel_size_in == Decimal("19.0")
    assert spec.displacement_l == Decimal("3.5")
    assert spec.engine_type == EngineType.GAS
    assert (spec.width_in, spec.height_in, spec.length_in) == (Decimal("78.7"), Decimal("67.1"), Decimal("198.4"))
    assert (spec.drivetrain, spec.seats, spec.doors) == ("FWD", 7, 4)
    assert (spec.horsepower, spec.horsepower_approximate) == (290, True)
    assert (spec.mpg_city, spec.mpg_highway) == (19, 26)
    assert spec.source == "csv:car_specs.csv"
    assert spec.raw["csv:car_specs.csv"]["MSRP"] == "49550"

    electric = CarModel.objects.select_related("specs").get(label="2023 Audi E-Tron GT")
    assert electric.specs.engine_type == EngineType.ELECTRIC
    assert electric.specs.displacement_l is None
    assert (electric.specs.mpg_city, electric.specs.mpg_highway) == (None, None)
    assert electric.specs.horsepower == 460

    # The original's "2023 Volkswagen ID" row fills the ID.4; the later ID.4 row is reported as the same car.
    assert CarModel.objects.get(label="2023 Volkswagen ID.4").msrp_usd == 47795
    assert "line 2750: 2023 Volkswagen ID.4: skipped: same car model as line 2623" in output

    # The six rows that are empty but for their label are skipped: counted on screen, each in the report.
    report = full_report(output)
    empty_rows = [line for line in report.splitlines() if "empty but for its name" in line]
    assert len(empty_rows) == 6
    assert "6 × skipped: row is empty but for its name (first 3 shown)" in output
    assert "line 184: 2016 Audi A8: skipped: row is empty but for its name" in output
    # Unknown models: one line each in the report, a count and the first few on screen.
    not_in_catalog = [line for line in report.splitlines() if "car model not in the catalog" in line]
    assert len(not_in_catalog) == 2568
    assert "line 2: 2024 Acura MDX: skipped: car model not in the catalog" in output
    assert len(output.splitlines()) <= 30, output

    again = run(str(specs_csv))
    assert "0 created, 0 updated, 174 unchanged" in again


def test_dash_wheel_size_is_unknown_and_reported(specs_csv):
    result = spec_import_file(specs_csv, create_missing=False)
    assert not result.with_outcome("rejected")
    # Not in the catalog here, so import just that car to see the "- " handling.
    services.car_model_get_or_create(make="Audi", model="A4", year=2009)
    result = spec_import_file(specs_csv)
    a4 = next(row for row in result.rows if row.label == "2009 Audi A4")
    assert a4.line == 174 and a4.outcome == "created"
    assert any("Front Wheel Size (in)" in note and "unknown" in note for note in a4.notes)
    spec = CarModel.objects.get(label="2009 Audi A4").specs
    assert spec.front_wheel_size_in is None
    assert spec.displacement_l == Decimal("2.0")


def test_dry_run_writes_nothing_and_reports_changes(loaded_catalog, tmp_path):
    path = write_csv(tmp_path / "specs.csv", [MDX, EV])
    before = (CarModel.objects.filter(msrp_usd__isnull=False).count(), Specification.objects.count())
    output = run(str(path), "--dry-run")
    assert "Dry run, nothing written: would have 2 created" in output
    assert "msrp_usd: — → 49550" in output
    assert "displacement_l: — → 3.5" in output
    assert (CarModel.objects.filter(msrp_usd__isnull=False).count(), Specification.objects.count()) == before == (0, 0)

    run(str(path))
    changed = list(MDX)
    changed[4] = "51000"
    write_csv(path, [changed, EV])
    output = run(str(path), "--dry-run")
    assert "would have 0 created, 1 updated, 1 unchanged" in output
    assert "msrp_usd: 49550 → 51000" in output
    assert CarModel.objects.get(label="2023 Acura MDX").msrp_usd == 49550


def test_unknown_models_are_skipped_unless_create_missing(tmp_path):
    path = write_csv(tmp_path / "specs.csv", [MDX, EV])
    output = run(str(path))
    assert "line 2: 2023 Acura MDX: skipped: car model not in the catalog" in output
    assert "line 3: 2023 Audi E-Tron GT: skipped" in output
    assert CarModel.objects.count() == 0

    output = run(str(path), "--create-missing")
    assert "2 created" in output and "2 car models created" in output
    assert set(Manufacturer.objects.values_list("name", flat=True)) == {"Acura", "Audi"}
    assert CarModel.objects.get(label="2023 Acura MDX").specs.horsepower == 290


def test_create_missing_dry_run_creates_nothing(tmp_path):
    path = write_csv(tmp_path / "specs.csv", [MDX])
    output = run(str(path), "--create-missing", "--dry-run")
    assert "would have 1 created" in output
    assert CarModel.objects.count() == 0 and Manufacturer.objects.count() == 0


def test_a_bad_row_is_rejected_alone_and_nothing_of_it_is_written(tmp_path):
    services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    services.car_model_get_or_create(make="Audi", model="E-Tron GT", year=2023)
    services.car_model_get_or_create(make="Acura", model="RDX", year=2023)
    bad_number = ["2023 Audi E-Tron GT", "Audi", "E-Tron GT", "2023", "104900", "20", "", "Electric", "wide", "55.6",
                  "196.4", "AWD", "5", "4", "4dr", "460", "", ""]  # fmt: skip
    # MSRP parses, body style does not: the model's MSRP must not be written either.
    bad_body = ["2023 Acura RDX", "Acura", "RDX", "2023", "44000", "19", "20", "Gas", "74.8", "65.7", "186.8", "AWD",
                "5", "4", "Hovercraft", "270", "21", "27"]  # fmt: skip
    path = write_csv(tmp_path / "specs.csv", [MDX, bad_number, bad_body, ["2023 Acura TLX", "x"]])
    output = run(str(path))
    assert "1 created, 0 updated, 0 unchanged, 0 skipped, 3 rejected" in output
    assert "line 3: 2023 Audi E-Tron GT: rejected: Width, Max w/o mirrors (in): 'wide' is not a number" in output
    assert "line 4: 2023 Acura RDX: rejected: Body Style: 'Hovercraft' is not a known value" in output
    assert "line 5: 2023 Acura TLX: rejected: malformed row" in output
    assert CarModel.objects.get(label="2023 Acura MDX").specs.horsepower == 290
    rdx = CarModel.objects.get(label="2023 Acura RDX")
    assert rdx.msrp_usd is None and not Specification.objects.filter(car_model=rdx).exists()
    assert not Specification.objects.filter(car_model__label="2023 Audi E-Tron GT").exists()


def test_a_row_failing_model_validation_rolls_back_its_car_model_change(tmp_path, monkeypatch):
    """The car model and its specification are written together or not at all."""
    car, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    original = services.specification_upsert

    def failing_upsert(*args, **kwargs):
        raise services.ValidationError("storage refused the row")

    monkeypatch.setattr(services, "specification_upsert", failing_upsert)
    output = run(str(write_csv(tmp_path / "specs.csv", [MDX])))
    assert "rejected: storage refused the row" in output
    car.refresh_from_db()
    assert car.msrp_usd is None and car.body_style == "", "the MSRP written before the failure was rolled back"
    monkeypatch.setattr(services, "specification_upsert", original)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00binary", "binary"),
        (b"", "empty"),
        (b"label,Make,Model\n2023 Acura MDX,Acura,MDX\n", "missing"),
        (b"\xff\xfe\xfa not utf8", "not UTF-8"),
        (b'"unterminated\n', "missing"),
    ],
)
def test_malformed_files_raise_a_clear_error_and_write_nothing(tmp_path, content, message):
    services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    path = tmp_path / "specs.csv"
    path.write_bytes(content)
    with pytest.raises(CommandError, match=message) as excinfo:
        run(str(path))
    assert "Nothing was imported" in str(excinfo.value)
    assert Specification.objects.count() == 0


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        run(str(tmp_path / "nope.csv"))


def test_header_missing_one_column_is_refused(tmp_path):
    header = [column for column in HEADER if column != "Drivetrain"]
    path = write_csv(tmp_path / "specs.csv", [MDX[:11] + MDX[12:]], header=header)
    with pytest.raises(CommandError, match="missing: Drivetrain"):
        run(str(path))


@pytest.mark.slow
def test_create_missing_loads_every_model_year_of_the_shared_csv(loaded_catalog, specs_csv):
    listed = set(CarModel.objects.values_list("label", flat=True))
    output = run(str(specs_csv), "--create-missing")
    assert "2742 created, 0 updated, 0 unchanged, 9 skipped, 0 rejected" in output
    assert CarModel.objects.filter(year=2019).count() == 196
    # the 2023 list's 174 models keep their names; the CSV's other 2023 rows are added beside them
    assert CarModel.objects.filter(year=2023).count() == 250
    assert CarModel.objects.filter(year=2023, label__in=listed).count() == 174
    assert set(CarModel.objects.values_list("year", flat=True).distinct()) == set(range(2008, 2025))
    assert len(output.splitlines()) <= 30, output
    assert "0 created, 0 updated, 2742 unchanged" in run(str(specs_csv), "--create-missing")
