"""Registering bundles, mapping labels to the catalog, and one active version per kind."""

import shutil

import pytest
from django.core.files.storage import default_storage
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
    STORED_MANIFEST,
    RegistryError,
    bundle_cache_dir,
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


def test_register_stores_the_bundle_in_the_media_storage_and_is_idempotent(make_bundle, settings):
    bundle = make_bundle(["Acura MDX", "Audi A4"])
    first = model_version_register(bundle)
    second = model_version_register(bundle)
    assert first.pk == second.pk
    assert ModelVersion.objects.count() == 1
    assert ModelVersionLabel.objects.filter(model_version=first).count() == 2
    assert first.bundle_path == bundle_storage_dir("classifier", first.version)
    assert stored_names(first) == sorted([*(p.name for p in bundle.iterdir()), STORED_MANIFEST])
    stored = model_version_bundle_dir(first)
    assert stored == bundle_cache_dir("classifier", first.version)
    assert stored.is_relative_to(settings.CARSITE_MODELS_DIR)
    assert (stored / "weights.safetensors").read_bytes() == (bundle / "weights.safetensors").read_bytes()
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
    forget_stored_bundle(version)
    with pytest.raises(RegistryError, match="not in the media storage"):
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


# ---------------------------------------------------------------- bundles in the media storage, hosts' caches


def stored_names(version: ModelVersion) -> list[str]:
    return sorted(default_storage.listdir(version.bundle_path)[1])


def forget_stored_bundle(version: ModelVersion) -> None:
    for name in stored_names(version):
        default_storage.delete(f"{version.bundle_path}/{name}")


def as_another_host(settings, tmp_path_factory) -> None:
    """Same database and media storage, a model folder of its own (nothing fetched yet)."""
    settings.CARSITE_MODELS_DIR = tmp_path_factory.mktemp("other-host-models")


def test_another_host_fetches_every_file_of_a_registered_bundle(make_bundle, settings, tmp_path, tmp_path_factory):
    source = tmp_path / "bundle"
    shutil.copytree(make_bundle(["A a", "B b"]), source)
    (source / "onnx").mkdir()
    (source / "onnx" / "model.onnx").write_bytes(b"an export added before registration")
    version = model_version_register(source)
    first_host = model_version_bundle_dir(version)

    as_another_host(settings, tmp_path_factory)
    fetched = model_version_bundle_dir(version)
    assert fetched != first_host and fetched.is_relative_to(settings.CARSITE_MODELS_DIR)
    assert {p.relative_to(fetched) for p in fetched.rglob("*") if p.is_file()} == {
        p.relative_to(source) for p in source.rglob("*") if p.is_file()
    }
    assert (fetched / "onnx" / "model.onnx").read_bytes() == b"an export added before registration"
    assert [p.name for p in fetched.parent.iterdir()] == [version.version], "no temporary folder is left"
    assert model_version_activate(version).is_active


def test_registering_again_stores_the_files_a_stored_bundle_lacks(make_bundle, settings, tmp_path, tmp_path_factory):
    source = tmp_path / "bundle"
    shutil.copytree(make_bundle(["A a", "B b"]), source)
    version = model_version_register(source)
    (source / "model.onnx").write_bytes(b"an export made after the first registration")
    assert model_version_register(source).pk == version.pk
    assert "model.onnx" in stored_names(version)

    as_another_host(settings, tmp_path_factory)
    assert (model_version_bundle_dir(version) / "model.onnx").read_bytes() == (source / "model.onnx").read_bytes()


def test_a_partly_stored_bundle_is_never_used(make_bundle, settings, tmp_path_factory):
    version = model_version_register(make_bundle(["A a", "B b"]))
    default_storage.delete(f"{version.bundle_path}/{STORED_MANIFEST}")  # as if the store was interrupted

    as_another_host(settings, tmp_path_factory)
    with pytest.raises(RegistryError, match=f"only partly \\({STORED_MANIFEST} is missing\\)"):
        model_version_activate(version)
    # The runtime's entry names the local folder it could not fill; loading from it then fails clearly.
    missing = model_version_bundle_dir(version)
    assert missing == bundle_cache_dir(version.kind, version.version) and not missing.exists()
    assert list(missing.parent.iterdir()) == []

    # Registering again stores it completely, over the files the interrupted store left.
    assert model_version_register(make_bundle(["A a", "B b"])).pk == version.pk
    assert STORED_MANIFEST in stored_names(version)
    assert (model_version_bundle_dir(version) / "weights.safetensors").is_file()


def test_a_stored_file_that_changed_is_refused(make_bundle, settings, tmp_path_factory):
    from django.core.files.base import ContentFile

    version = model_version_register(make_bundle(["A a", "B b"]))
    name = f"{version.bundle_path}/weights.safetensors"
    default_storage.delete(name)
    default_storage.save(name, ContentFile(b"edited in the bucket"))

    as_another_host(settings, tmp_path_factory)
    with pytest.raises(RegistryError, match="weights.safetensors does not match the checksum"):
        model_version_activate(version)
    assert not bundle_cache_dir(version.kind, version.version).exists()
    assert list(bundle_cache_dir(version.kind, version.version).parent.iterdir()) == []


def test_versions_registered_before_the_media_storage_still_load(make_bundle, settings, tmp_path):
    bundle = make_bundle(["A a", "B b"])
    outside = tmp_path / "elsewhere"
    shutil.copytree(bundle, outside)
    absolute = ModelVersion.objects.create(
        kind="classifier", version="legacy-abs", architecture="efficientnet_lite0", bundle_path=str(outside)
    )
    assert model_version_bundle_dir(absolute) == outside
    # A relative path was CARSITE_MODELS_DIR/<kind>/<version>: where this host keeps its copy now.
    version = model_version_register(bundle)
    ModelVersion.objects.filter(pk=version.pk).update(bundle_path=f"classifier/{version.version}")
    forget_stored_bundle(version)
    version.refresh_from_db()
    assert model_version_activate(version).is_active
    # Registering it again stores it for every host and records where.
    model_version_register(bundle)
    version.refresh_from_db()
    assert version.bundle_path == bundle_storage_dir("classifier", version.version)
    assert STORED_MANIFEST in stored_names(version)


def test_the_site_does_not_serve_model_bundles_as_media(client, make_bundle):
    from django.urls import Resolver404, resolve
    from django.views.static import serve

    version = model_version_register(make_bundle(["A a", "B b"]))
    assert default_storage.exists(f"{version.bundle_path}/bundle.json")
    assert client.get(f"/media/{version.bundle_path}/bundle.json").status_code == 404
    with pytest.raises(Resolver404):
        resolve(f"/media/{version.bundle_path}/bundle.json")
    assert resolve("/media/catalog/photo.jpg").func is serve  # photos are still served


def test_export_models_gives_older_stored_versions_their_export(
    make_bundle, monkeypatch, settings, tmp_path, tmp_path_factory
):
    from io import StringIO

    from django.core.management import call_command

    from classifier.services import registry

    source = tmp_path / "bundle"
    shutil.copytree(make_bundle(["Acura MDX", "Audi A4"], seed=9), source)
    with monkeypatch.context() as old_registration:  # registered before exports existed
        old_registration.setattr(registry, "_export_onnx", lambda bundle_dir: None)
        version = model_version_register(source)
    assert "onnx.json" not in stored_names(version)

    out = StringIO()
    call_command("export_models", version.version, stdout=out)
    assert (model_version_bundle_dir(version) / "onnx.json").is_file()
    assert "1 model versions have their ONNX export" in out.getvalue()
    assert {"model.onnx", "onnx.json"} <= set(stored_names(version)), "the export is stored for the other hosts"
    as_another_host(settings, tmp_path_factory)
    assert (model_version_bundle_dir(version) / "onnx.json").is_file()
