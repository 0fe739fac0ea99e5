"""Image helpers shared by the catalog and the models, free of torch and Django: upright RGB, near-duplicate hashes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def to_rgb(img: Image.Image) -> Image.Image:
    """Return an upright 8-bit RGB copy of any PIL image the web might hand us.

    Handles EXIF orientation, animated images (first frame), palette/LA/RGBA transparency
    (composited on white, so transparent pixels don't become black), 16/32-bit greyscale
    ("I;16", "I", "F": rescaled to 0..255 rather than clipped), CMYK and L.
    """
    if getattr(img, "is_animated", False):
        img.seek(0)
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        # Palette images may carry transparency in info; go through RGBA to honour it.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA") or (mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    # Copy so callers may close/seek the original without affecting us.
    return img.copy()


def dhash(image: Image.Image, size: int = 8) -> int:
    """64-bit difference hash: bit set where a pixel of a (size+1) x size grey thumbnail is brighter than its
    right neighbour, rows first. Robust to rescaling and recompression, which is how the same press photo
    reappears across model years; stored in the catalog as 16 hex digits."""
    grey = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS), dtype=np.int16)
    value = 0
    for bit in (grey[:, :-1] > grey[:, 1:]).flatten():
        value = (value << 1) | int(bit)
    return value


def hamming(a: int | str, b: int | str) -> int:
    """Bits that differ between two hashes (ints, or hex strings as stored)."""
    a_int = int(a, 16) if isinstance(a, str) else a
    b_int = int(b, 16) if isinstance(b, str) else b
    return (a_int ^ b_int).bit_count()
