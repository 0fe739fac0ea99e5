"""Accepted images are stored as upright RGB JPEGs whatever their mode, orientation or animation."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from classifier.models import Classification
from classifier.services.classification import Upload, classification_create

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


def test_make_fallback_sums_probabilities_per_make():
    from classifier.services.classification import make_fallback_from

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
