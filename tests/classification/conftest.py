"""Fixtures for the classification tests: real model bundles (cached across runs), catalog rows, images."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
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


# ---------------------------------------------------------------- an S3 API server on loopback (moto)

S3_BUCKET = "carsite-media"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's standalone S3 server on a free loopback port, for the tests of one module."""
    pytest.importorskip("moto")
    requests = pytest.importorskip("requests")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # moto builds its backends on the first request: on a busy machine that can take seconds.
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(endpoint, timeout=10)
                break
            except requests.RequestException:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto's S3 server did not start")
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def s3_environment(endpoint: str) -> dict[str, str]:
    return {
        "S3_BUCKET": S3_BUCKET,
        "S3_ENDPOINT_URL": endpoint,
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_REGION": "us-east-1",
    }


@pytest.fixture
def s3_media(s3_endpoint, settings):
    """The storage and page policy carsite/settings.py builds from S3_* variables, on the loopback server."""
    import boto3

    chosen = settings_for(s3_environment(s3_endpoint), "STORAGES", "CONTENT_SECURITY_POLICY", "SERVE_MEDIA")
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.create_bucket(Bucket=S3_BUCKET)
    settings.STORAGES = {**settings.STORAGES, "default": chosen["STORAGES"]["default"]}
    settings.CONTENT_SECURITY_POLICY = chosen["CONTENT_SECURITY_POLICY"]
    assert chosen["SERVE_MEDIA"] is False
    yield client
    for item in client.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []):
        client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=S3_BUCKET)


def settings_for(environment: dict[str, str], *names: str) -> dict:
    """What carsite/settings.py makes of ``environment``, read in a fresh process."""
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{name: getattr(settings, name) for name in {list(names)!r}}}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "carsite.settings", **environment}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
