"""Every kind of bad upload gets a clear error, through the page and the API, and nothing is stored."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.html import escape
from PIL import Image

from classifier.models import Classification
from tests.classification.conftest import image_bytes, media_files


def _truncated_jpeg() -> bytes:
    data = image_bytes("JPEG", size=(640, 480), color=(10, 120, 200), quality=95)
    return data[: len(data) // 2]


def _truncated_large_jpeg() -> bytes:
    # Over the 1600 px side limit, so it is decoded at reduced scale: that must still read every byte.
    image = Image.effect_noise((2400, 1800), 40).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()[: buffer.tell() * 3 // 4]


def _corrupt_png() -> bytes:
    image = Image.effect_noise((200, 200), 60).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 40
    data[start : start + 64] = bytes(64)  # break the compressed stream and its checksum
    return bytes(data)


def _pixel_bomb() -> bytes:
    # 12,000 x 12,000 one-bit pixels: a few kilobytes on disk, 144 million pixels once decoded.
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _over_size_limit() -> bytes:
    limit = 10 * 1024 * 1024
    return b"\xff\xd8\xff\xe0" + b"\0" * limit


BAD_INPUTS = {
    "text": (b"just some text, not a photo\n" * 20, "not_an_image", "not an image"),
    "pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", "not_an_image", "not an image"),
    "html": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "not_an_image", "not an image"),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="300"><rect width="400" height="300"/></svg>',
        "not_an_image",
        "not an image",
    ),
    "zero_bytes": (b"", "empty", "empty"),
    "truncated_jpeg": (_truncated_jpeg(), "corrupt", "truncated or corrupt"),
    "truncated_large_jpeg": (_truncated_large_jpeg(), "corrupt", "truncated or corrupt"),
    "corrupt_png": (_corrupt_png(), "corrupt", "truncated or corrupt"),
    "too_small": (image_bytes("JPEG", size=(48, 200)), "too_small", "at least 64 pixels"),
    "gif": (image_bytes("GIF", size=(300, 200), mode="P", color=3), "unsupported_format", "JPEG, PNG or WebP"),
    "bmp": (image_bytes("BMP", size=(300, 200)), "unsupported_format", "JPEG, PNG or WebP"),
    "tiff": (image_bytes("TIFF", size=(300, 200)), "unsupported_format", "JPEG, PNG or WebP"),
}
SLOW_BAD_INPUTS = {
    "over_size_limit": (_over_size_limit, "too_large", "the limit is 10 MB"),
    "pixel_bomb": (_pixel_bomb, "too_many_pixels", "pixels"),
}


def _cases():
    for name, (data, code, text) in BAD_INPUTS.items():
        yield pytest.param(lambda data=data: data, code, text, id=name)
    for name, (make, code, text) in SLOW_BAD_INPUTS.items():
        yield pytest.param(make, code, text, id=name)


def _assert_nothing_stored(media_root) -> None:
    assert Classification.objects.count() == 0
    assert media_files(media_root) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("make_data", "code", "message_part"), list(_cases()))
def test_page_rejects_bad_upload(client, _isolated_media, make_data, code, message_part):
    upload = SimpleUploadedFile("car.jpg", make_data(), content_type="image/jpeg")

    response = client.post(reverse("classifier:upload"), {"image": upload})

    assert response.status_code == 400
    errors = " ".join(response.context["form"].errors["image"])
    assert message_part.lower() in errors.lower()
    assert escape(errors) in response.content.decode()
    _assert_nothing_stored(_isolated_media)


@pytest.mark.django_db
@pytest.mark.parametrize(("make_data", "code", "message_part"), list(_cases()))
def test_api_rejects_bad_upload(client, _isolated_media, make_data, code, message_part):
    upload = SimpleUploadedFile("car.jpg", make_data(), content_type="image/jpeg")

    response = client.post("/api/v1/classifications/", {"image": upload})

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == code
    assert message_part.lower() in body["error"]["message"].lower()
    _assert_nothing_stored(_isolated_media)


@pytest.mark.django_db
def test_api_batch_with_one_bad_image_stores_nothing(client, _isolated_media):
    good = [SimpleUploadedFile(f"ok{i}.jpg", image_bytes("JPEG"), content_type="image/jpeg") for i in range(2)]
    bad = SimpleUploadedFile("notes.jpg", b"plain text", content_type="image/jpeg")

    response = client.post("/api/v1/classifications/", {"image": [*good, bad]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_an_image"
    assert "notes.jpg" in response.json()["error"]["message"]
    _assert_nothing_stored(_isolated_media)


@pytest.mark.django_db
def test_api_without_image_part(client, _isolated_media):
    response = client.post("/api/v1/classifications/", {"photo": "nothing"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_image"
    _assert_nothing_stored(_isolated_media)


@pytest.mark.django_db
def test_page_without_file_shows_form_error(client, _isolated_media):
    response = client.post(reverse("classifier:upload"), {})

    assert response.status_code == 400
    assert "Choose a photo" in response.content.decode()
    _assert_nothing_stored(_isolated_media)
