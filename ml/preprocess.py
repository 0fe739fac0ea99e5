"""The eval transform, in numpy and Pillow alone: what serving feeds the model and what evaluation measured.

Torch-free so that a serving install needs no torch; ``ml.presets.ClassificationPresetEval`` wraps this same
function for training and evaluation, so the two are equal by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ml.imaging import to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite checkpoints were trained on (x - 127) / 128 inputs.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything needed to reproduce the eval transform; stored in bundle.json."""

    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    # (height, width): resize the whole frame to it instead of resize + centre crop (which cuts the
    # front and rear off a landscape photo of a car). None: resize_size then crop_size, as before.
    frame_size: tuple[int, int] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the array the model gets."""
        return self.frame_size if self.frame_size is not None else (self.crop_size, self.crop_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.frame_size is None:
            del d["frame_size"]  # bundles of the crop geometry keep the keys (and hash) they always had
        else:
            d["frame_size"] = list(self.frame_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        return cls(
            crop_size=int(d["crop_size"]),
            resize_size=int(d["resize_size"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
            frame_size=tuple(int(x) for x in d["frame_size"]) if d.get("frame_size") else None,  # type: ignore[arg-type]
        )


_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side at ``short_side`` and the long side scaled to match, rounded down."""
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def resize(image: Image.Image, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """An RGB image resized to ``size`` = (height, width), as a uint8 (H, W, 3) array.

    Bilinear and bicubic are Pillow's antialiased filters (what torchvision's antialiased resize was built
    to match); nearest picks source pixel floor(i * in / out), as torch's "nearest" does.
    """
    check_interpolation(interpolation)
    height, width = size
    if (height, width) == (image.height, image.width):
        return np.asarray(image)
    if interpolation == "nearest":
        array = np.asarray(image)
        return array[_nearest_indices(image.height, height)[:, None], _nearest_indices(image.width, width)[None, :]]
    return np.asarray(image.resize((width, height), _PIL_FILTERS[interpolation]))


def _nearest_indices(source: int, target: int) -> np.ndarray:
    # In float32, as torch computes them: in float64 a few rows land on the neighbouring source pixel.
    scale = np.float32(source) / np.float32(target)
    return np.minimum(np.floor(np.arange(target, dtype=np.float32) * scale).astype(np.intp), source - 1)


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` square of an (H, W, C) array, zero-padded where the image is smaller."""
    height, width = array.shape[:2]
    if size > height or size > width:
        pad_x, pad_y = max(size - width, 0), max(size - height, 0)
        array = np.pad(array, ((pad_y // 2, (pad_y + 1) // 2), (pad_x // 2, (pad_x + 1) // 2), (0, 0)))
        height, width = array.shape[:2]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return array[top : top + size, left : left + size]


def eval_array(image: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """The eval transform of one image: to RGB, the recorded geometry, scaled to [0, 1] and normalised.

    Returns a float32 (3, H, W) array of ``cfg.input_size``.
    """
    rgb = to_rgb(image)
    if cfg.frame_size is not None:
        pixels = resize(rgb, cfg.frame_size, cfg.interpolation)
    else:
        short = resize(rgb, resized_size(rgb.height, rgb.width, cfg.resize_size), cfg.interpolation)
        pixels = center_crop(short, cfg.crop_size)
    mean, std = np.asarray(cfg.mean, dtype=np.float32), np.asarray(cfg.std, dtype=np.float32)
    normalised = (pixels.astype(np.float32) * np.float32(1.0 / 255) - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def load_eval_array(item: Image.Image | str | Any, cfg: PreprocessConfig) -> np.ndarray:
    """``eval_array`` of a PIL image or of the image file at a path."""
    if isinstance(item, Image.Image):
        return eval_array(item, cfg)
    with Image.open(item) as image:
        return eval_array(image, cfg)
