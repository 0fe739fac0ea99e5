"""A kept JPEG loses its metadata wherever the segments sit: after the scan, or between progressive scans.

The JPEGs are made by Pillow and then given APP1 (Exif: camera make, GPS position) and COM segments by
hand at places Pillow never writes them.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from catalog.imaging import strip_jpeg_metadata
from classifier.models import Classification
from classifier.services.intake import Upload, classification_create

pytestmark = pytest.mark.django_db

SOS, EOI = b"\xff\xda", b"\xff\xd9"
CAMERA_MAKE = "PhoneMaker-7"
COMMENT = b"taken at 12 Home Street"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _metadata_segments() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = CAMERA_MAKE  # Make
    exif[0x8825] = {2: (52.0, 31.0, 12.0), 1: "N"}  # GPS latitude
    return _segment(0xE1, b"Exif\0\0" + exif.tobytes()) + _segment(0xFE, COMMENT)


def _pillow_jpeg(**options) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((320, 240), 50).convert("RGB").save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def _insert(data: bytes, at: int, extra: bytes) -> bytes:
    return data[:at] + extra + data[at:]


def _stored(data: bytes) -> bytes:
    classification = classification_create(Upload(data, "phone.jpg"))
    with Classification.objects.get(pk=classification.pk).image.open("rb") as fh:
        return fh.read()


def _pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def _assert_no_metadata(stored: bytes) -> None:
    assert CAMERA_MAKE.encode() not in stored
    assert COMMENT not in stored
    assert b"Exif\0\0" not in stored


def test_metadata_after_the_scan_is_not_stored():
    clean = _pillow_jpeg()
    assert clean.endswith(EOI)
    data = _insert(clean, len(clean) - 2, _metadata_segments())
    assert CAMERA_MAKE.encode() in data and _pixels(data) == _pixels(clean)

    stored = _stored(data)

    _assert_no_metadata(stored)
    # Kept, not re-encoded: exactly the bytes Pillow wrote before the segments were added.
    assert stored == clean


def test_metadata_between_the_scans_of_a_progressive_jpeg_is_not_stored():
    clean = _pillow_jpeg(progressive=True)
    # FF DA never occurs inside entropy-coded data (FF is followed there by 00 or a restart marker).
    first_scan = clean.index(SOS)
    second_scan = clean.index(SOS, first_scan + 2)
    data = _insert(clean, second_scan, _metadata_segments())
    data = _insert(data, len(data) - 2, _metadata_segments())

    stored = _stored(data)

    _assert_no_metadata(stored)
    assert stored == clean
    assert _pixels(stored) == _pixels(data)


def test_strip_keeps_restart_markers_and_tables_between_scans():
    clean = _pillow_jpeg(progressive=True, restart_marker_blocks=1)
    assert any(bytes([0xFF, marker]) in clean for marker in range(0xD0, 0xD8))
    data = _insert(clean, clean.index(SOS, clean.index(SOS) + 2), _metadata_segments())

    assert strip_jpeg_metadata(data) == clean


def test_strip_refuses_a_scan_that_never_ends():
    clean = _pillow_jpeg()
    assert strip_jpeg_metadata(clean[:-2]) is None
