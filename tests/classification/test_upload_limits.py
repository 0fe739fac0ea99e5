"""Upload limits: one photo allowance per client for the page and the API, proxy headers trusted only
when configured, a shared cache with Redis, a pixel limit for full-size decoding, a request body cap."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from PIL import Image
from rest_framework.test import APIClient

from classifier.models import Classification
from tests.classification.conftest import image_bytes, media_files
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.django_db
API_URL = "/api/v1/classifications/"
PAGE_URL = "/classify/"


def _jpeg(name: str = "car.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes("JPEG"), content_type="image/jpeg")


@pytest.fixture
def rates(settings):
    """Throttle rates small enough to reach: 3 photos a minute anonymously, 4 for a signed-in user."""

    def set_rates(anon: str = "3/minute", user: str = "4/minute", **rest_framework) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"classify_anon": anon, "classify_user": user},
            **rest_framework,
        }

    set_rates()
    return set_rates


# --- Item 3: the upload allowance ---


def test_a_new_forwarded_for_header_per_request_does_not_reset_the_allowance(rates):
    client = APIClient(REMOTE_ADDR="203.0.113.7")
    statuses = [
        client.post(API_URL, {"image": _jpeg()}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    assert Classification.objects.count() == 3


def test_behind_trusted_proxies_the_client_is_the_address_they_saw(rates):
    rates(NUM_PROXIES=1)
    # Every request comes from the one proxy; what the client wrote in front of the proxy's entry is ignored.
    proxy = APIClient(REMOTE_ADDR="10.0.0.2")
    statuses = [
        proxy.post(API_URL, {"image": _jpeg()}, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 198.51.100.9").status_code
        for n in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    other_client = proxy.post(API_URL, {"image": _jpeg()}, HTTP_X_FORWARDED_FOR="198.51.100.10")
    assert other_client.status_code == 202


def test_the_upload_page_is_throttled(client, rates):
    statuses = [client.post(PAGE_URL, {"image": _jpeg()}).status_code for _ in range(4)]

    assert statuses == [302, 302, 302, 429]
    assert Classification.objects.count() == 3
    refused = client.post(PAGE_URL, {"image": _jpeg()})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "too many photos" in refused.content.decode()


def test_the_page_and_the_api_share_one_allowance(client, rates):
    assert client.post(PAGE_URL, {"image": _jpeg()}).status_code == 302
    assert client.post(PAGE_URL, {"image": _jpeg()}).status_code == 302
    assert client.post(API_URL, {"image": _jpeg()}).status_code == 202

    refused = client.post(API_URL, {"image": _jpeg()})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert client.post(PAGE_URL, {"image": _jpeg()}).status_code == 429


def test_a_batch_takes_one_from_the_allowance_per_photo(client, rates, _isolated_media):
    assert client.post(API_URL, {"image": [_jpeg("a.jpg"), _jpeg("b.jpg")]}).status_code == 202

    refused = client.post(API_URL, {"image": [_jpeg("c.jpg"), _jpeg("d.jpg")]})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert Classification.objects.count() == 2
    # The refused batch took nothing: the one photo left still goes through.
    assert client.post(API_URL, {"image": _jpeg("e.jpg")}).status_code == 202
    assert client.post(API_URL, {"image": _jpeg("f.jpg")}).status_code == 429


def test_signed_in_users_are_counted_by_account_on_the_page(client, rates, django_user_model):
    user = django_user_model.objects.create_user("visitor", password="x-long-password-1")
    client.force_login(user)
    statuses = [client.post(PAGE_URL, {"image": _jpeg()}, REMOTE_ADDR=f"192.0.2.{n}").status_code for n in range(5)]
    assert statuses == [302, 302, 302, 302, 429]


def _settings_in_a_fresh_process(**env: str) -> str:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'carsite.settings'; django.setup();"
        "from django.conf import settings; cache = settings.CACHES['default'];"
        "print(cache['BACKEND'], cache.get('LOCATION'))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in {"CACHE_URL", "CELERY_BROKER_URL"}}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_throttling_shares_the_redis_broker_when_no_cache_is_configured():
    assert _settings_in_a_fresh_process(CELERY_BROKER_URL="redis://127.0.0.1:6379/2") == (
        "django.core.cache.backends.redis.RedisCache redis://127.0.0.1:6379/2"
    )
    assert _settings_in_a_fresh_process(
        CELERY_BROKER_URL="redis://127.0.0.1:6379/2", CACHE_URL="redis://127.0.0.1:6379/3"
    ) == ("django.core.cache.backends.redis.RedisCache redis://127.0.0.1:6379/3")
    # Without a broker (tasks in-process: one process) memory is enough.
    assert _settings_in_a_fresh_process().startswith("django.core.cache.backends.locmem.LocMemCache")


# --- Item 3: formats decoded at full size have a lower pixel limit ---


def _solid(fmt: str, mode: str, side: int, **options) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new(mode, (side, side), (90, 120, 200, 255)[: len(mode)]).save(buffer, format=fmt, **options)
    return SimpleUploadedFile(f"big.{fmt.lower()}", buffer.getvalue())


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_png_and_webp_over_the_decoded_pixel_limit_are_refused(client, settings, _isolated_media, fmt, options):
    # 2001 x 2001 is just over the default limit of 4,000,000 pixels: a few KB to send, ~100 MB to decode.
    response = client.post(API_URL, {"image": _solid(fmt, "RGBA", 2001, **options)})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_many_pixels_to_decode"
    assert "4,000,000 pixels" in error["message"]
    assert not Classification.objects.exists()
    assert media_files(_isolated_media) == []


def test_a_jpeg_of_that_size_is_still_accepted(client):
    assert client.post(API_URL, {"image": _solid("JPEG", "RGB", 2001)}).status_code == 202


def test_the_page_explains_the_decoded_pixel_limit(client):
    response = client.post(PAGE_URL, {"image": _solid("PNG", "RGBA", 2001)})
    assert response.status_code == 400
    assert "PNG photos are limited to 4,000,000 pixels" in response.content.decode()


# --- Item 5: the request body cap ---


class CountingInput(io.BytesIO):
    """A request body that records how much of it was read."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


def _batch_body(count: int) -> bytes:
    return encode_multipart(BOUNDARY, {"image": [_jpeg(f"{n}.jpg") for n in range(count)]})


def _post_body(client, url: str, body: bytes, content_length: int | None = None) -> tuple:
    stream = CountingInput(body)
    length = len(body) if content_length is None else content_length
    response = client.generic(
        "POST", url, b"x", content_type=MULTIPART_CONTENT, CONTENT_LENGTH=str(length), **{"wsgi.input": stream}
    )
    return response, stream


def test_api_refuses_a_body_over_the_cap_before_reading_it(client, settings, _isolated_media):
    body = _batch_body(3)
    settings.CARSITE_REQUEST_MAX_BYTES = len(body) - 1

    response, stream = _post_body(client, API_URL, body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert stream.bytes_read == 0
    assert not Classification.objects.exists()
    assert media_files(_isolated_media) == []


def test_a_body_claiming_500_mb_is_refused_unread(client, _isolated_media):
    response, stream = _post_body(client, API_URL, _batch_body(1), content_length=500 * 1024 * 1024)

    assert response.status_code == 413
    assert response.json()["error"]["message"] == "The request is 500 MB; the limit is 101 MB."
    assert stream.bytes_read == 0


def test_the_page_refuses_a_body_over_the_cap_with_a_page(client, settings, _isolated_media):
    body = _batch_body(1)
    settings.CARSITE_REQUEST_MAX_BYTES = len(body) - 1

    response, stream = _post_body(client, PAGE_URL, body)

    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert "That upload is too large" in response.content.decode()
    assert stream.bytes_read == 0
    assert not Classification.objects.exists()


def test_a_body_at_the_cap_goes_through(client, settings):
    body = _batch_body(3)
    settings.CARSITE_REQUEST_MAX_BYTES = len(body)

    response, _ = _post_body(client, API_URL, body)

    assert response.status_code == 202
    assert Classification.objects.count() == 3


def test_a_body_without_content_length_is_never_read(client, _isolated_media):
    # Chunked transfer: Django and DRF read no body without a Content-Length, so there is nothing to cap.
    stream = CountingInput(_batch_body(1) * 1000)
    response = client.generic(
        "POST",
        API_URL,
        b"x",
        content_type=MULTIPART_CONTENT,
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": stream},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_image"
    assert stream.bytes_read == 0


def test_the_default_cap_fits_a_full_batch_at_the_byte_limit(settings):
    # The multipart body of a full batch of photos at the byte limit, each with the longest kept file name.
    small = b"\xff" * 10
    names = [f"{n:03d}".ljust(255, "x") + ".jpg" for n in range(settings.CARSITE_CLASSIFY_BATCH_LIMIT)]
    files = [SimpleUploadedFile(name, small, content_type="image/jpeg") for name in names]
    body = encode_multipart(BOUNDARY, {"image": files, "csrfmiddlewaretoken": "x" * 64})
    full_batch = len(body) + len(files) * (settings.CARSITE_UPLOAD_MAX_BYTES - len(small))

    assert full_batch <= settings.CARSITE_REQUEST_MAX_BYTES


def _asgi_post(path: str, chunks: int, chunk_size: int, headers: list | None = None) -> tuple[list[dict], int]:
    """POST ``chunks`` body chunks through carsite's ASGI application: (messages sent back, chunks it read)."""
    import asyncio

    from carsite.asgi import application

    read, sent = 0, []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/octet-stream"), *(headers or [])],
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> dict:
        nonlocal read
        if read < chunks:
            read += 1
            return {"type": "http.request", "body": b"\0" * chunk_size, "more_body": read < chunks}
        await asyncio.Event().wait()  # the client sends nothing more and stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(scope, receive, send), timeout=60))
    return sent, read


@pytest.mark.parametrize("path", [API_URL, PAGE_URL])
def test_asgi_stops_reading_a_body_without_content_length_at_the_cap(settings, path):
    settings.CARSITE_REQUEST_MAX_BYTES = 200 * 1024

    sent, read = _asgi_post(path, chunks=50, chunk_size=64 * 1024)

    assert sent[0]["status"] == 413
    assert read == 4  # the chunk that went over the cap is the last one read
    if path == API_URL:
        assert b'"code": "request_too_large"' in sent[1]["body"]
    else:
        assert b"That upload is too large" in sent[1]["body"]


def test_asgi_refuses_a_declared_over_size_body_unread(settings):
    settings.CARSITE_REQUEST_MAX_BYTES = 200 * 1024

    sent, read = _asgi_post(API_URL, chunks=50, chunk_size=64 * 1024, headers=[(b"content-length", b"3276800")])

    assert sent[0]["status"] == 413
    assert read == 0
