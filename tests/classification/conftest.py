"""Fixtures for the classification tests: real model bundles (cached across runs), catalog rows, images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

MDX_EXTERIOR = "Acura_MDX_2011_42_18_300_37_6_78_68_191_16_AWD_7_4_SUV_Eyo.jpg"


@pytest.fixture(scope="session")
def gate_bundle_dir() -> Path:
    from tests.classification.bundles import BundleUnavailable, gate_bundle

    try:
        return gate_bundle()
    except BundleUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def classifier_bundle_dir(tmp_path_factory) -> Path:
    """A small make-and-model classifier ('Acura MDX', …) trained head-only on the shared photos."""
    from tests.classification.bundles import BundleUnavailable, classifier_bundle
    from tests.conftest import SHARED_DATA

    photos = SHARED_DATA / "car-photos"
    if not (photos / "manifest.csv").is_file():
        pytest.skip(f"shared car photos not found at {photos}")
    try:
        return classifier_bundle(photos, tmp_path_factory.mktemp("train"))
    except BundleUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Upload throttling counts per client in the cache: every test starts with a full allowance."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def models_dir(settings, tmp_path) -> Path:
    settings.CARSITE_MODELS_DIR = tmp_path / "models"
    return settings.CARSITE_MODELS_DIR


@pytest.fixture
def clean_runtime():
    """Each test sees the models its own database activates, not what an earlier test loaded."""
    from classifier.runtime import clear_loaded_models

    clear_loaded_models()
    yield
    clear_loaded_models()


ACURA_SPECS = {
    "MDX": {"msrp_usd": 49550, "horsepower": 290, "mpg_city": 19, "mpg_highway": 26, "seats": 7, "drivetrain": "FWD"},
    "RDX": {"msrp_usd": 43350, "horsepower": 270, "seats": 5},
    "TLX": {"msrp_usd": 39950, "horsepower": 270, "seats": 5},
    "ILX": {"msrp_usd": 28000, "horsepower": 200, "seats": 5},
    "RLX": {"msrp_usd": 54900, "horsepower": 310, "seats": 5},
    "NSX": {"msrp_usd": 169500, "horsepower": 573, "seats": 2},
}


@pytest.fixture
def acura_catalog(db) -> dict:
    """Catalog car models for the classifier's labels, with MSRP and a few specs."""
    from catalog.services import car_model_get_or_create, specification_upsert

    created = {}
    for name, values in ACURA_SPECS.items():
        values = dict(values)
        msrp = values.pop("msrp_usd")
        car_model, _ = car_model_get_or_create(make="Acura", model=name, year=2023, defaults={"msrp_usd": msrp})
        specification_upsert(car_model, values=values, source="tests")
        created[name] = car_model
    car_model, _ = car_model_get_or_create(make="Alfa Romeo", model="4C Spider", year=2020)
    created["4C Spider"] = car_model
    return created


def _register_and_activate(bundle_dir: Path):
    from classifier.services.registry import model_version_activate, model_version_register

    return model_version_activate(model_version_register(bundle_dir))


@pytest.fixture
def active_gate(db, models_dir, clean_runtime, gate_bundle_dir):
    return _register_and_activate(gate_bundle_dir)


@pytest.fixture
def active_classifier(db, models_dir, clean_runtime, acura_catalog, classifier_bundle_dir):
    return _register_and_activate(classifier_bundle_dir)


@pytest.fixture
def mdx_photo(shared_data) -> bytes:
    """A real exterior press photo of an Acura MDX."""
    return (shared_data / "car-photos" / "images" / MDX_EXTERIOR).read_bytes()


def image_bytes(fmt: str = "JPEG", size=(320, 240), mode: str = "RGB", color=(200, 30, 30), **save) -> bytes:
    image = Image.new(mode, size, color)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def media_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()]


def upload_on_page(client, color=(200, 30, 30)):
    """Upload a generated photo through the upload page; the job it created."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from classifier.models import Classification

    photo = SimpleUploadedFile("car.jpg", image_bytes("JPEG", size=(400, 300), color=color), "image/jpeg")
    response = client.post(reverse("classifier:upload"), {"image": photo})
    assert response.status_code == 302
    return Classification.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[-1])
