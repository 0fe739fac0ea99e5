"""``manage.py load_catalog`` builds the 2023 catalog once, and running it again changes nothing."""

import io

import pytest
from django.core.management import CommandError, call_command

from catalog.models import CarModel, Manufacturer
from tests.catalog.conftest import CATALOG_LIST

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("load_catalog", *args, stdout=out)
    return out.getvalue()


def test_load_catalog_creates_174_models_of_31_manufacturers_and_is_idempotent():
    labels = [line.strip() for line in CATALOG_LIST.read_text().splitlines() if line.strip()]
    assert len(labels) == 175

    first = _run()
    assert "174 car models created, 0 already there" in first
    assert CarModel.objects.count() == 174
    assert Manufacturer.objects.count() == 31
    snapshot = sorted(CarModel.objects.values_list("pk", "label", "slug"))

    second = _run()
    assert "0 car models created, 174 already there" in second
    assert sorted(CarModel.objects.values_list("pk", "label", "slug")) == snapshot
    assert Manufacturer.objects.count() == 31


def test_load_catalog_uses_official_spellings_and_merges_the_id4_alias():
    _run()
    names = set(Manufacturer.objects.values_list("name", flat=True))
    assert {"BMW", "INFINITI", "MINI", "FIAT", "Mercedes-Benz", "Alfa Romeo"} <= names
    assert CarModel.objects.filter(label="2023 Volkswagen ID.4").exists()
    assert not CarModel.objects.filter(label="2023 Volkswagen ID").exists()
    assert CarModel.objects.filter(manufacturer__slug="audi", year=2023).count() == 13


def test_load_catalog_rejects_a_bad_list_without_loading_anything(tmp_path):
    bad = tmp_path / "labels.txt"
    bad.write_text("2023 Audi A4\nnot a label\n")
    with pytest.raises(CommandError, match="not a label"):
        _run(str(bad))
    assert CarModel.objects.count() == 0
    with pytest.raises(CommandError, match="Cannot read"):
        _run(str(tmp_path / "missing.txt"))
