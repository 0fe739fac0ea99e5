"""Registering bundles, mapping labels to the catalog, and one active version per kind."""

import shutil

import pytest
from django.db import IntegrityError, transaction

from catalog import services as catalog_services
from classifier.models import ModelKind, ModelVersion, ModelVersionLabel
from classifier.selectors.registry import (
    active_model_version,
    model_version_find,
    model_version_report,
    supported_car_models,
)
from classifier.services.registry import (
    RegistryError,
    bundle_storage_dir,
    model_version_activate,
    model_version_bundle_dir,
    model_version_register,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog():
    mdx_2023, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    mdx_2019, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2019)
    a4, _ = catalog_services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    spider, _ = catalog_services.car_model_get_or_create(make="Alfa Romeo", model="4C Spider", year=2020)
    return {"mdx_2023": mdx_2023, "mdx_2019": mdx_2019, "a4": a4, "spider": spider}


def test_register_copies_the_bundle_into_the_store_and_is_idempotent(make_bundle, settings):
    bundle = make_bundle(["Acura MDX", "Audi A4"])
    first = model_version_register(bundle)
    second = model_version_register(bundle)
    assert first.pk == second.pk
    assert ModelVersion.objects.count() == 1
    assert ModelVersionLabel.objects.filter(model_version=first).count() == 2
    stored = model_version_bundle_dir(first)
    assert stored == bundle_storage_dir("classifier", first.version)
    assert stored.is_relative_to(settings.CARSITE_MODELS_DIR)
    assert (stored / "weights.safetensors").is_file()
    assert first.labels == ["Acura MDX", "Audi A4"]
    assert first.architecture == "efficientnet_lite0"
    assert first.metrics["top1"] == 0.5
    # Registering straight from the store is the same version too.
    assert model_version_register(stored).pk == first.pk


def test_registration_exports_the_bundle_to_onnx_beside_its_unchanged_bundle_json(make_bundle):
    import json

    bundle = make_bundle(["Acura MDX", "Audi A4"], seed=7)
    bundle_json = (bundle / "bundle.json").read_text()
    version = model_version_register(bundle)
    stored = model_version_bundle_dir(version)
    for directory in (bundle, stored):  # exported in the bundle, then copied with it
        meta = json.loads((directory / "onnx.json").read_text())
        assert meta["bundle_version"] == version.version and meta["max_abs_difference"] <= 1e-4
        assert (directory / "model.onnx").stat().st_size > 1000
    assert (stored / "bundle.json").read_text() == bundle_json


def test_registering_again_exports_a_version_stored_before_exports_existed(make_bundle):
    version = model_version_register(make_bundle(["Acura MDX", "Audi A4"], seed=8))
    stored = model_version_bundle_dir(version)
    for name in ("model.onnx", "onnx.json"):  # as an older registration left it
        (stored / name).unlink()
    assert model_version_register(stored).pk == version.pk
    assert (stored / "model.onnx").is_file() and (stored / "onnx.json").is_file()


def test_labels_map_to_catalog_car_models(make_bundle, catalog):
    labels = ["2023 Audi A4", "Acura MDX", "alfa romeo 4c spider", "Tesla Roadster"]
    version = model_version_register(make_bundle(labels))
    mapping = {link.label: link.car_model for link in version.label_links.all()}
    assert mapping["2023 Audi A4"] == catalog["a4"]
    assert mapping["Acura MDX"] == catalog["mdx_2023"], "make+model labels map to the newest model year"
    assert mapping["alfa romeo 4c spider"] == catalog["spider"]
    assert mapping["Tesla Roadster"] is None
    assert [link.index for link in version.label_links.all()] == [0, 1, 2, 3]


def test_gate_labels_map_to_no_car_model(make_bundle, catalog):
    version = model_version_register(make_bundle(["exterior", "interior", "other"], kind="gate"))
    assert version.kind == ModelKind.GATE
    assert list(version.label_links.values_list("car_model", flat=True)) == [None, None, None]


def test_labels_unmapped_at_registration_are_mapped_once_the_catalog_has_them(make_bundle):
    version = model_version_register(make_bundle(["Acura MDX", "Audi A4"]))
    assert not version.label_links.exclude(car_model=None).exists()
    mdx, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    model_version_activate(version)
    assert version.label_links.get(label="Acura MDX").car_model == mdx


def test_activation_keeps_one_active_version_per_kind(make_bundle):
    first = model_version_register(make_bundle(["A a", "B b"], seed=1))
    second = model_version_register(make_bundle(["A a", "B b"], seed=2))
    gate = model_version_register(make_bundle(["exterior", "interior", "other"], kind="gate"))
    assert first.version != second.version
    model_version_activate(gate)
    model_version_activate(first)
    assert active_model_version(ModelKind.CLASSIFIER) == first
    model_version_activate(second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert not first.is_active and second.is_active and second.activated_at is not None
    assert active_model_version(ModelKind.CLASSIFIER) == second
    assert active_model_version(ModelKind.GATE) == gate, "activating a classifier leaves the gate alone"
    assert ModelVersion.objects.filter(is_active=True).count() == 2
    # Activating the active version again changes nothing.
    assert model_version_activate(second).pk == second.pk
    assert ModelVersion.objects.filter(kind=ModelKind.CLASSIFIER, is_active=True).count() == 1


def test_database_refuses_two_active_versions_of_a_kind(make_bundle):
    first = model_version_register(make_bundle(["A a", "B b"], seed=1))
    second = model_version_register(make_bundle(["A a", "B b"], seed=2))
    model_version_activate(first)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=second.pk).update(is_active=True)
    assert list(ModelVersion.objects.filter(is_active=True)) == [first]


def test_register_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    with pytest.raises(RegistryError, match="not a model bundle"):
        model_version_register(tmp_path)
    assert not ModelVersion.objects.exists()


def test_register_rejects_a_tampered_bundle(make_bundle, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(make_bundle(["A a", "B b"]), copy)
    meta = (copy / "bundle.json").read_text().replace('"A a"', '"C c"')
    (copy / "bundle.json").write_text(meta)
    with pytest.raises(RegistryError, match="corrupt or was modified"):
        model_version_register(copy)
    assert not ModelVersion.objects.exists()


def test_activation_refuses_a_version_whose_bundle_is_gone(make_bundle):
    version = model_version_register(make_bundle(["A a", "B b"]))
    shutil.rmtree(model_version_bundle_dir(version))
    with pytest.raises(RegistryError):
        model_version_activate(version)
    version.refresh_from_db()
    assert not version.is_active


def test_supported_car_models_are_those_the_active_classifier_names(make_bundle, catalog):
    assert list(supported_car_models()) == []
    version = model_version_register(make_bundle(["Acura MDX", "2023 Audi A4", "Unknown Car"]))
    assert list(supported_car_models()) == [], "only the active classifier counts"
    model_version_activate(version)
    assert set(supported_car_models()) == {catalog["mdx_2023"], catalog["a4"]}


def test_find_a_version_by_pk_or_version_prefix(make_bundle):
    version = model_version_register(make_bundle(["A a", "B b"]))
    assert model_version_find(str(version.pk)) == version
    assert model_version_find(version.version[:6]) == version
    assert model_version_find(version.version, kind="classifier") == version
    with pytest.raises(ModelVersion.DoesNotExist):
        model_version_find(version.version, kind="gate")


def test_report_selector_reads_the_report_files(make_bundle):
    version = model_version_register(make_bundle(["A a", "B b"]))
    bundle_dir = model_version_bundle_dir(version)
    (bundle_dir / "report.csv").write_text("class,precision,recall\nA a,0.5,1.0\nB b,1.0,0.5\n")
    report = model_version_report(version)
    assert report.columns == ["class", "precision", "recall"]
    assert report.rows == [["A a", "0.5", "1.0"], ["B b", "1.0", "0.5"]]
    assert report.images == {}


def test_export_models_gives_older_stored_versions_their_export(make_bundle):
    from io import StringIO

    from django.core.management import call_command

    version = model_version_register(make_bundle(["Acura MDX", "Audi A4"], seed=9))
    stored = model_version_bundle_dir(version)
    (stored / "onnx.json").unlink()  # as an older registration left it
    out = StringIO()
    call_command("export_models", version.version, stdout=out)
    assert (stored / "onnx.json").is_file() and "1 model versions have their ONNX export" in out.getvalue()
