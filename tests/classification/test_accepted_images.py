"""Accepted images are stored as upright RGB JPEGs whatever their mode, orientation or animation.

A JPEG that already is one is stored as it came, less its metadata; anything else is re-encoded.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from catalog.imaging import strip_jpeg_metadata
from classifier.models import Classification
from classifier.services.intake import Upload, classification_create

pytestmark = pytest.mark.django_db


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    # Stored 400 wide x 200 high; EXIF orientation 6 says "rotate 90° clockwise to view": upright is 200 x 400.
    image = Image.new("RGB", (400, 200), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 200, 200))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(image, "JPEG", exif=exif.tobytes(), quality=95)


def _cmyk() -> bytes:
    return _save(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG", quality=95)


def _palette_transparent() -> bytes:
    image = Image.new("P", (300, 200), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (150, 0, 300, 200))
    return _save(image, "PNG", transparency=0)


def _sixteen_bit() -> bytes:
    image = Image.new("I;16", (300, 200))
    image.paste(65535, (0, 0, 150, 200))
    return _save(image, "PNG")


def _greyscale() -> bytes:
    return _save(Image.new("L", (300, 200), 128), "JPEG")


def _animated_png() -> bytes:
    frames = [Image.new("RGB", (300, 200), colour) for colour in ((0, 200, 0), (0, 0, 200), (200, 0, 0))]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (300, 200), colour) for colour in ((0, 200, 0), (200, 0, 0))]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)


CASES = {
    "exif_rotated": (_exif_rotated, (200, 400), {(0, 0): "red"}),
    "cmyk": (_cmyk, (300, 200), {(150, 100): "red"}),  # C0 M100 Y100 K0 is red
    "palette_transparency": (_palette_transparent, (300, 200), {(10, 10): "white", (290, 10): "blue"}),
    "sixteen_bit": (_sixteen_bit, (300, 200), {(10, 10): "white", (290, 10): "black"}),
    "greyscale": (_greyscale, (300, 200), {(10, 10): "grey"}),
    "animated_png": (_animated_png, (300, 200), {(10, 10): "green"}),
    "animated_webp": (_animated_webp, (300, 200), {(10, 10): "green"}),
}
COLOURS = {
    "red": (255, 0, 0),
    "white": (255, 255, 255),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "green": (0, 200, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_accepted_image_is_stored_upright_rgb_jpeg(case):
    make, size, pixels = CASES[case]

    classification = classification_create(Upload(make(), f"{case}.img"))

    stored = Classification.objects.get(pk=classification.pk)
    with stored.image.open("rb") as fh:
        image = Image.open(io.BytesIO(fh.read()))
        image.load()
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", size)
    assert (stored.width, stored.height) == size
    assert stored.image.name.endswith(f"{stored.pk.hex}.jpg")
    for xy, colour in pixels.items():
        actual = image.getpixel(xy)
        assert all(abs(a - e) <= 40 for a, e in zip(actual, COLOURS[colour], strict=True)), (xy, actual, colour)


def _stored(classification: Classification) -> bytes:
    stored = Classification.objects.get(pk=classification.pk)
    with stored.image.open("rb") as fh:
        return fh.read()


def _photo_like(size: tuple[int, int]) -> Image.Image:
    return Image.effect_noise(size, 50).convert("RGB")


def _with_metadata(image: Image.Image, **options) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {2: (52.0, 31.0, 12.0), 1: "N"}  # GPS latitude: where the visitor stood
    icc = b"\0" * 128 + b"icc-profile-stand-in"
    return _save(image, "JPEG", exif=exif.tobytes(), comment=b"taken at home", icc_profile=icc, quality=92, **options)


def test_clean_jpeg_is_stored_as_uploaded_without_its_metadata():
    original = _photo_like((320, 240))
    data = _with_metadata(original) + b"trailing bytes after the end of the image"

    stored = _stored(classification_create(Upload(data, "phone.jpg")))

    assert len(stored) < len(data)
    image = Image.open(io.BytesIO(stored))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (320, 240))
    assert not image.getexif(), "the Exif block (GPS position, camera) must not be stored"
    assert "comment" not in image.info
    assert image.info.get("icc_profile", b"").endswith(b"icc-profile-stand-in"), "the colour profile is kept"
    assert not stored.endswith(b"after the end of the image")
    # Not re-encoded: the same compressed data, so exactly the same pixels as the upload.
    assert image.tobytes() == Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def test_progressive_jpeg_is_kept_too():
    data = _with_metadata(_photo_like((300, 200)), progressive=True)

    stored = _stored(classification_create(Upload(data, "progressive.jpg")))

    assert Image.open(io.BytesIO(stored)).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert b"Exif" not in stored


def test_large_jpeg_is_shrunk_to_the_side_limit(settings):
    settings.CARSITE_IMAGE_MAX_SIDE = 800
    original = Image.new("RGB", (2000, 1000), (200, 30, 30))
    original.paste((30, 30, 200), (1000, 0, 2000, 1000))  # right half blue

    stored = Image.open(io.BytesIO(_stored(classification_create(Upload(_save(original, "JPEG"), "big.jpg")))))

    assert (stored.format, stored.size) == ("JPEG", (800, 400))
    assert all(abs(a - e) <= 40 for a, e in zip(stored.getpixel((100, 200)), (200, 30, 30), strict=True))
    assert all(abs(a - e) <= 40 for a, e in zip(stored.getpixel((700, 200)), (30, 30, 200), strict=True))


def test_jpeg_twice_the_side_limit_is_shrunk_not_kept(settings):
    # Decoded at exactly 1/2 scale it fits the limit, but the upload itself does not: it must be re-encoded.
    settings.CARSITE_IMAGE_MAX_SIDE = 800
    data = _save(_photo_like((1600, 800)), "JPEG")

    classification = classification_create(Upload(data, "double.jpg"))

    assert (classification.width, classification.height) == (800, 400)
    assert Image.open(io.BytesIO(_stored(classification))).size == (800, 400)


def test_large_jpeg_keeps_a_narrow_side_accepted_before_shrinking(settings):
    # 70 px is over the 64 px minimum as uploaded, even though it is decoded at reduced scale.
    settings.CARSITE_IMAGE_MAX_SIDE = 800
    data = _save(Image.new("RGB", (3000, 70), (90, 90, 90)), "JPEG")

    classification = classification_create(Upload(data, "panorama.jpg"))

    assert (classification.width, classification.height) == (800, 19)


def test_mpo_from_a_phone_camera_is_accepted_as_its_first_picture():
    first, second = Image.new("RGB", (300, 200), (0, 200, 0)), Image.new("RGB", (300, 200), (200, 0, 0))
    data = _save(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"

    stored = _stored(classification_create(Upload(data, "camera.jpg")))

    image = Image.open(io.BytesIO(stored))
    assert (image.format, image.size, getattr(image, "n_frames", 1)) == ("JPEG", (300, 200), 1)
    assert all(abs(a - e) <= 40 for a, e in zip(image.getpixel((10, 10)), (0, 200, 0), strict=True))


def test_strip_jpeg_metadata_refuses_what_it_cannot_walk():
    data = _with_metadata(_photo_like((100, 100)))
    assert strip_jpeg_metadata(data) is not None
    assert strip_jpeg_metadata(b"\x89PNG\r\n\x1a\n" + data[2:]) is None  # not a JPEG
    assert strip_jpeg_metadata(data[:2] + b"\xff\xe1\xff\xff" + data[6:]) is None  # segment runs past the end
    assert strip_jpeg_metadata(data[: data.index(b"\xff\xd9")]) is None  # no end of image


def test_make_fallback_sums_probabilities_per_make():
    from classifier.services.execution import make_fallback_from

    fallback = make_fallback_from(
        [
            ("Acura MDX", 0.30),
            ("Alfa Romeo 4C Spider", 0.25),
            ("Acura RDX", 0.20),
            ("2023 Alfa Romeo Giulia", 0.15),
            ("bmw X5", 0.10),
        ]
    )

    assert [item["make"] for item in fallback] == ["Acura", "Alfa Romeo", "BMW"]
    assert [item["probability"] for item in fallback] == pytest.approx([0.50, 0.40, 0.10])
