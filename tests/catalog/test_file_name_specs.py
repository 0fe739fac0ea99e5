"""Specifications read from The Car Connection's photo file names: approximate, and never over a spec sheet."""

from decimal import Decimal

import pytest

from catalog import services
from catalog.models import CarModel, Specification
from catalog.spec_import import FILE_NAME_SOURCE, file_name_row, spec_import, specs_from_file_names

pytestmark = pytest.mark.django_db

MDX_2014 = "Acura_MDX_2014_42_18_290_35_6_77_67_193_20_FWD_7_4_SUV_Abc.jpg"
ALFA = "Alfa Romeo_4C Spider_2020_67_17_230_17_4_73_46_157_24_RWD_2_2_Convertible_xYz.jpg"


def test_file_name_reads_as_a_spec_row():
    row = file_name_row(ALFA)
    assert row is not None
    assert (row[""], row["MSRP"], row["Displacement"], row["Cylinders"]) == (
        "2020 Alfa Romeo 4C Spider",
        "67000",
        "17",
        "4",
    )
    assert file_name_row("IMG_0001.jpg") is None


def test_car_model_without_specs_gets_typed_approximate_ones_from_its_photos_names():
    car, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2014)
    result = specs_from_file_names([MDX_2014, MDX_2014.replace("Abc", "Def")])
    assert result.counts["created"] == 1
    car.refresh_from_db()
    spec = Specification.objects.get(car_model=car)
    assert (car.msrp_usd, car.body_style) == (42000, "suv")
    assert (spec.front_wheel_size_in, spec.displacement_l, spec.cylinders) == (Decimal("18.0"), Decimal("3.5"), 6)
    assert (spec.horsepower, spec.horsepower_approximate, spec.mpg_city, spec.mpg_highway) == (290, True, 20, None)
    assert (spec.width_in, spec.height_in, spec.length_in) == (Decimal("77.0"), Decimal("67.0"), Decimal("193.0"))
    assert (spec.drivetrain, spec.seats, spec.doors) == ("FWD", 7, 4)
    assert (spec.approximate, spec.source) == (True, FILE_NAME_SOURCE)
    # again: nothing changes
    assert specs_from_file_names([MDX_2014]).counts["unchanged"] == 1


def test_spec_sheet_and_curator_win_over_file_names():
    sheet, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2014)
    services.specification_upsert(sheet, values={"horsepower": 290, "mpg_city": 19}, source="csv:car_specs.csv")
    curated, _ = services.car_model_get_or_create(make="Alfa Romeo", model="4C Spider", year=2020)
    services.specification_upsert(curated, values={"seats": 2}, source="admin")
    result = specs_from_file_names([MDX_2014, ALFA])
    assert result.counts == {"created": 0, "updated": 0, "unchanged": 0, "skipped": 2, "rejected": 0}
    assert Specification.objects.get(car_model=sheet).mpg_city == 19
    assert Specification.objects.get(car_model=curated).cylinders is None

    # and a spec sheet that arrives later replaces the rough figures and clears the mark
    later, _ = services.car_model_get_or_create(make="Acura", model="RDX", year=2019)
    specs_from_file_names(["Acura_RDX_2019_39_19_270_20_4_74_65_186_21_AWD_5_4_SUV_Abc.jpg"])
    assert Specification.objects.get(car_model=later).approximate is True
    csv_row = file_name_row("Acura_RDX_2019_40_19_272_20_4_74_65_186_22_AWD_5_4_SUV_Abc.jpg")
    assert csv_row is not None
    del csv_row["Cylinders"]
    spec_import([(2, csv_row)], source="csv:car_specs.csv")
    spec = Specification.objects.get(car_model=later)
    assert (spec.approximate, spec.source, spec.horsepower, spec.cylinders) == (False, "csv:car_specs.csv", 272, 4)


def test_file_names_of_models_not_in_the_catalog_create_nothing():
    result = specs_from_file_names([MDX_2014])
    assert result.counts["skipped"] == 1 and not CarModel.objects.exists()
