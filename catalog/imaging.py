"""Image validation and normalisation shared by scraping, uploads and imports.

Every image that enters carsite goes through ``load_image``: the bytes must decode with Pillow
as a supported format (the Content-Type or file name is never trusted), stay under the pixel
limits (decompression bombs; a lower one for formats always decoded at full size) and above the
minimum size. ``normalise`` then gives an upright RGB image whose JPEG encoding is what gets stored;
a JPEG that already is one can be kept as it came, less its metadata (``keep_clean_jpeg``).
"""

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ml.imaging import dhash, to_rgb

# MPO is how Pillow names a JPEG that carries extra pictures (many phone cameras write them): its first
# picture is an ordinary JPEG.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
SUPPORTED_FORMATS_TEXT = "JPEG, PNG or WebP"
EXIF_ORIENTATION = 0x0112


class ImageRejected(ValueError):
    """The bytes are not an image carsite accepts; the message says why, for a person."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    # Formats without JPEG's reduced-scale decoding (PNG, WebP) decode every pixel: a lower limit for them.
    max_decoded_pixels: int = 4_000_000
    min_side: int = 64
    max_side: int = 1600


def limits_from_settings() -> ImageLimits:
    from django.conf import settings

    return ImageLimits(
        max_bytes=settings.CARSITE_UPLOAD_MAX_BYTES,
        max_pixels=settings.CARSITE_UPLOAD_MAX_PIXELS,
        max_decoded_pixels=settings.CARSITE_UPLOAD_MAX_DECODED_PIXELS,
        min_side=settings.CARSITE_IMAGE_MIN_SIDE,
        max_side=settings.CARSITE_IMAGE_MAX_SIDE,
    )


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def load_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode ``data`` fully or raise ImageRejected; returns the image with its frame 0 loaded."""
    if not data:
        raise ImageRejected("The file is empty.", "empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            f"The file is {_megabytes(len(data))}; the limit is {_megabytes(limits.max_bytes)}.", "too_large"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=None)
            fmt = image.format
            if fmt not in SUPPORTED_FORMATS:
                raise ImageRejected(
                    f"{fmt or 'This'} images are not supported; upload a {SUPPORTED_FORMATS_TEXT} photo.",
                    "unsupported_format",
                )
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageRejected(
                    f"The image is {width}×{height} pixels; the limit is {limits.max_pixels:,} pixels.",
                    "too_many_pixels",
                )
            if fmt not in ("JPEG", "MPO") and width * height > limits.max_decoded_pixels:
                raise ImageRejected(
                    f"The {fmt} image is {width}×{height} pixels; {fmt} photos are limited to "
                    f"{limits.max_decoded_pixels:,} pixels. Send a smaller one, or a JPEG.",
                    "too_many_pixels_to_decode",
                )
            image.seek(0)
            if fmt in ("JPEG", "MPO") and max(width, height) > limits.max_side:
                # Decode at the smallest of 1/2, 1/4, 1/8 scale that still covers max_side: it will be shrunk
                # to that anyway, and a phone photo decodes several times faster. Every byte is still read,
                # so a truncated or corrupt file is refused all the same.
                shrink = limits.max_side / max(width, height)
                image.draft(image.mode, (max(1, int(width * shrink)), max(1, int(height * shrink))))
            image.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("The image has too many pixels to process safely.", "too_many_pixels") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            f"The file is not an image we can read; upload a {SUPPORTED_FORMATS_TEXT} photo.", "not_an_image"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("The image is truncated or corrupt.", "corrupt") from exc
    if min(width, height) < limits.min_side:
        raise ImageRejected(
            f"The image is {width}×{height} pixels; it must be at least {limits.min_side} pixels on each side.",
            "too_small",
        )
    return image


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


# Markers whose segments carry only metadata: APP1 (Exif, with GPS position and camera serial; XMP),
# APP3-APP13 (APP13: Photoshop/IPTC), APP15 and comments. APP0 (JFIF), APP2 (ICC colour profile) and
# APP14 (Adobe colour transform) change how the pixels decode, so they stay.
_JPEG_METADATA_MARKERS = frozenset({0xE1, *range(0xE3, 0xEE), 0xEF, 0xFE})
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
# In entropy-coded data a 0xFF is followed by 00 (a stuffed byte) or a restart marker D0-D7; anything
# else (after optional FF fill bytes) starts the next segment: another table, scan, APPn/COM, or EOI.
_JPEG_SCAN_END = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


def strip_jpeg_metadata(data: bytes) -> bytes | None:
    """The same JPEG without its metadata segments and anything after its end, byte for byte otherwise.

    Metadata segments are dropped wherever they are: before the first scan, between the scans of a
    progressive JPEG or after the last one. None when the file does not follow the JPEG segment layout
    closely enough to do that safely.
    """
    if data[:2] != b"\xff\xd8":
        return None
    kept, pos = [data[:2]], 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _JPEG_EOI:  # whatever follows the end of the image is dropped too
            kept.append(data[pos : pos + 2])
            return b"".join(kept)
        if marker in _JPEG_STANDALONE_MARKERS:
            kept.append(data[pos : pos + 2])
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        segment_end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if segment_end <= pos + 3 or segment_end > len(data):
            return None
        if marker not in _JPEG_METADATA_MARKERS:
            kept.append(data[pos:segment_end])
        pos = segment_end
        if marker == _JPEG_SOS:
            scan_end = _JPEG_SCAN_END.search(data, pos)
            if scan_end is None:
                return None
            kept.append(data[pos : scan_end.start()])
            pos = scan_end.start()
    return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class NormalisedImage:
    jpeg: bytes
    sha256: str
    phash: str
    width: int
    height: int


def _kept_jpeg(data: bytes, image: Image.Image, limits: ImageLimits) -> bytes | None:
    """The uploaded bytes less their metadata, when they already are what ``normalise`` would store:
    an RGB JPEG (not MPO: its extra pictures would come along), upright, within the size limit."""
    if image.format != "JPEG" or image.mode != "RGB":
        return None
    # The size as uploaded (header only): ``image`` may have been decoded at reduced scale to fit the limit.
    with Image.open(io.BytesIO(data)) as uploaded:
        if max(uploaded.size) > limits.max_side:
            return None
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        return None
    return strip_jpeg_metadata(data)


def normalise(
    data: bytes, limits: ImageLimits, *, perceptual_hash: bool = True, keep_clean_jpeg: bool = False
) -> NormalisedImage:
    """Validate ``data`` and return the RGB JPEG carsite stores, with its hashes and size.

    ``perceptual_hash=False`` leaves ``phash`` empty: a visitor's upload is never compared for
    near-duplicates, and the hash is a sizeable share of an upload's CPU time.
    ``keep_clean_jpeg`` stores an upright RGB JPEG within the size limit as it came, less its metadata
    (Exif, XMP, IPTC, comments), instead of re-encoding it: no second round of JPEG loss, and less CPU
    per upload. The catalog leaves it off so its exact-duplicate hashes stay comparable with stored images.
    """
    image = load_image(data, limits)
    kept = _kept_jpeg(data, image, limits) if keep_clean_jpeg else None
    # A kept JPEG is already upright RGB within the limit: its decoded pixels are what would be encoded.
    rgb = image if kept is not None else fit_within(to_rgb(image), limits.max_side)
    jpeg = kept if kept is not None else encode_jpeg(rgb)
    phash = f"{dhash(rgb):016x}" if perceptual_hash else ""
    return NormalisedImage(jpeg=jpeg, sha256=sha256_hex(jpeg), phash=phash, width=rgb.width, height=rgb.height)
