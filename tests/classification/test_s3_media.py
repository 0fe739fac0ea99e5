"""Media on an S3-compatible bucket: uploads, catalog photos, training reads and the pages' links.

A real S3 API server (moto's standalone server) runs on loopback for these tests; no local media path is
used anywhere on the way.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.classification.conftest import (
    MDX_EXTERIOR,
    S3_BUCKET,
    image_bytes,
    media_files,
    s3_environment,
    settings_for,
)

pytestmark = pytest.mark.django_db
BUCKET = S3_BUCKET


def _keys(client, prefix: str = "") -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def _photo_keys(client) -> list[str]:
    return [key for key in _keys(client) if not key.startswith("model-bundles/")]


def test_settings_choose_the_bucket_only_when_one_is_named(s3_endpoint):
    local = settings_for({"S3_BUCKET": ""}, "STORAGES", "CONTENT_SECURITY_POLICY")
    assert local["STORAGES"]["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert "img-src 'self' data: blob:;" in local["CONTENT_SECURITY_POLICY"]
    on_s3 = settings_for(s3_environment(s3_endpoint), "STORAGES", "CONTENT_SECURITY_POLICY")
    storage = on_s3["STORAGES"]["default"]
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert (storage["OPTIONS"]["bucket_name"], storage["OPTIONS"]["addressing_style"]) == (BUCKET, "path")
    assert f"img-src 'self' data: blob: {s3_endpoint};" in on_s3["CONTENT_SECURITY_POLICY"]


def test_upload_runs_on_models_from_the_bucket_and_its_pages_link_to_the_bucket(
    client,
    s3_media,
    active_gate,
    active_classifier,
    shared_data,
    _isolated_media,
    settings,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    from classifier.models import Classification, ClassificationStatus
    from classifier.runtime import clear_loaded_models

    for version in (active_gate, active_classifier):
        prefix = f"{version.bundle_path}/"
        manifest = json.loads(s3_media.get_object(Bucket=BUCKET, Key=f"{prefix}stored-files.json")["Body"].read())
        assert "weights.safetensors" in manifest["files"]
        listed = [*manifest["files"], "stored-files.json"]
        assert sorted(f"{prefix}{name}" for name in listed) == _keys(s3_media, prefix)
    # The worker of a host that has fetched nothing yet: its models come from the bucket.
    settings.CARSITE_MODELS_DIR = tmp_path / "second-host-models"
    clear_loaded_models()

    photo = (shared_data / "car-photos" / "images" / MDX_EXTERIOR).read_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/classifications/", {"image": SimpleUploadedFile("mdx.jpg", photo, content_type="image/jpeg")}
        )
    assert response.status_code == 202
    job = Classification.objects.get()
    assert job.status == ClassificationStatus.DONE, job.error_detail
    assert job.predictions.exists() and job.predicted_car_model.label == "2023 Acura MDX"
    assert sorted(p.name for p in (tmp_path / "second-host-models").iterdir()) == ["classifier", "gate"]
    assert _photo_keys(s3_media) == [job.image.name]
    assert media_files(_isolated_media) == []  # nothing on the local disk

    page = client.get(f"/classify/{job.pk}/")
    html = page.content.decode()
    url = job.image.url
    assert urlsplit(url).netloc == urlsplit(s3_media.meta.endpoint_url).netloc
    assert url.replace("&", "&amp;") in html
    assert s3_media.meta.endpoint_url in page["Content-Security-Policy"]
    stored = s3_media.get_object(Bucket=BUCKET, Key=job.image.name)["Body"].read()
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == stored and stored[:2] == b"\xff\xd8"
    api_url = client.get(f"/api/v1/classifications/{job.pk}/").json()["image_url"]
    assert urlsplit(api_url).netloc == urlsplit(s3_media.meta.endpoint_url).netloc
    assert requests.get(api_url, timeout=10).content == stored


def test_catalog_photos_and_training_read_through_the_bucket(client, s3_media, tmp_path, _isolated_media):
    from catalog.models import CarImage, ImageOrigin, ImageView
    from catalog.services import car_image_add, car_model_get_or_create
    from classifier.services.training import build_training_set

    car, _ = car_model_get_or_create(make="Acura", model="MDX", year=2023)
    added = car_image_add(
        car, data=image_bytes("JPEG", size=(320, 240)), origin=ImageOrigin.IMPORTED, view=ImageView.EXTERIOR
    )
    assert added.saved and _keys(s3_media) == [added.image.image.name]
    html = client.get(car.get_absolute_url()).content.decode()
    assert added.image.image.url.replace("&", "&amp;") in html
    assert requests.get(added.image.image.url, timeout=10).status_code == 200
    (api_image,) = client.get(f"/api/v1/models/{car.pk}/").json()["images"]["exterior"]
    assert (
        requests.get(api_image["image"], timeout=10).content
        == s3_media.get_object(Bucket=BUCKET, Key=added.image.image.name)["Body"].read()
    )

    training = build_training_set(
        CarImage.objects.all(),
        lambda image: image.car_model.label,
        dataset_dir=tmp_path / "dataset",
        min_images_per_class=1,
        dedup_distance=0,
    )
    (record,) = training.records
    assert record.path.read_bytes() == s3_media.get_object(Bucket=BUCKET, Key=added.image.image.name)["Body"].read()
    assert media_files(_isolated_media) == []


def test_a_host_that_cannot_reach_the_bucket_says_so_and_loads_nothing(
    s3_media, settings, models_dir, clean_runtime, gate_bundle_dir, tmp_path
):
    from botocore.config import Config

    from classifier import runtime
    from classifier.models import ModelKind
    from classifier.services.registry import RegistryError, model_version_activate, model_version_register
    from tests.classification.conftest import free_port

    gate = model_version_activate(model_version_register(gate_bundle_dir))
    # Another host, whose bucket endpoint answers nothing (one connection attempt, no retries).
    settings.CARSITE_MODELS_DIR = tmp_path / "unreachable-host-models"
    options = {**settings.STORAGES["default"]["OPTIONS"], "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    options["client_config"] = Config(retries={"max_attempts": 1}, connect_timeout=1)
    settings.STORAGES = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": options}}

    with pytest.raises(RegistryError, match=f"cannot fetch {gate.bundle_path} from the media storage: EndpointConn"):
        model_version_activate(gate)
    with pytest.raises(runtime.ModelLoadError, match="Cannot load"):
        runtime.get_active_model(ModelKind.GATE)
    assert list((tmp_path / "unreachable-host-models").rglob("*")) == [tmp_path / "unreachable-host-models" / "gate"]
