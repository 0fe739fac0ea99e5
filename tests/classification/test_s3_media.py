"""Media on an S3-compatible bucket: uploads, catalog photos, training reads and the pages' links.

A real S3 API server (moto's standalone server) runs on loopback for these tests; no local media path is
used anywhere on the way.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.classification.conftest import MDX_EXTERIOR, image_bytes, media_files

pytestmark = pytest.mark.django_db
BUCKET = "carsite-media"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's standalone S3 server on a free loopback port, for this module's tests."""
    pytest.importorskip("moto")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("moto's S3 server did not start")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def _s3_environment(endpoint: str) -> dict[str, str]:
    return {
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": endpoint,
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_REGION": "us-east-1",
    }


@pytest.fixture
def s3_media(s3_endpoint, settings):
    """The storage and page policy carsite/settings.py builds from S3_* variables, on the loopback server."""
    import boto3

    chosen = _settings_for(_s3_environment(s3_endpoint), "STORAGES", "CONTENT_SECURITY_POLICY", "SERVE_MEDIA")
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "default": chosen["STORAGES"]["default"]}
    settings.CONTENT_SECURITY_POLICY = chosen["CONTENT_SECURITY_POLICY"]
    assert chosen["SERVE_MEDIA"] is False
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _settings_for(environment: dict[str, str], *names: str) -> dict:
    """What carsite/settings.py makes of ``environment``, read in a fresh process."""
    import json
    import os

    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{name: getattr(settings, name) for name in {list(names)!r}}}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "carsite.settings", **environment}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _keys(client) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_settings_choose_the_bucket_only_when_one_is_named(s3_endpoint):
    local = _settings_for({"S3_BUCKET": ""}, "STORAGES", "CONTENT_SECURITY_POLICY")
    assert local["STORAGES"]["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert "img-src 'self' data: blob:;" in local["CONTENT_SECURITY_POLICY"]
    on_s3 = _settings_for(_s3_environment(s3_endpoint), "STORAGES", "CONTENT_SECURITY_POLICY")
    storage = on_s3["STORAGES"]["default"]
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert (storage["OPTIONS"]["bucket_name"], storage["OPTIONS"]["addressing_style"]) == (BUCKET, "path")
    assert f"img-src 'self' data: blob: {s3_endpoint};" in on_s3["CONTENT_SECURITY_POLICY"]


def test_upload_runs_and_its_pages_link_to_the_bucket(
    client, s3_media, active_gate, active_classifier, shared_data, _isolated_media, django_capture_on_commit_callbacks
):
    from classifier.models import Classification, ClassificationStatus

    photo = (shared_data / "car-photos" / "images" / MDX_EXTERIOR).read_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/classifications/", {"image": SimpleUploadedFile("mdx.jpg", photo, content_type="image/jpeg")}
        )
    assert response.status_code == 202
    job = Classification.objects.get()
    assert job.status == ClassificationStatus.DONE, job.error
    assert job.predictions.exists()
    assert _keys(s3_media) == [job.image.name]
    assert media_files(_isolated_media) == []  # nothing on the local disk

    page = client.get(f"/classify/{job.pk}/")
    html = page.content.decode()
    url = job.image.url
    assert urlsplit(url).netloc == urlsplit(s3_media.meta.endpoint_url).netloc
    assert url.replace("&", "&amp;") in html
    assert s3_media.meta.endpoint_url in page["Content-Security-Policy"]
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"


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
