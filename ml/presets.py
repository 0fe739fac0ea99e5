"""Image transforms for training and for evaluation/inference.

The eval preset is the single source of truth for test-time *and* serving-time
preprocessing, so what the model saw during evaluation is exactly what the site feeds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite checkpoints were trained on (x - 127) / 128 inputs.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything needed to reproduce the eval transform; stored in bundle.json."""

    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        return cls(
            crop_size=int(d["crop_size"]),
            resize_size=int(d["resize_size"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
        )


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


class ToRGB(torch.nn.Module):
    def forward(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)


_INTERP = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class ClassificationPresetEval:
    """Deterministic: to RGB, resize short side, centre crop, tensor, normalise."""

    def __init__(
        self,
        crop_size: int = 224,
        resize_size: int = 256,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        self.config = PreprocessConfig(crop_size, resize_size, tuple(mean), tuple(std), interpolation)
        self.transforms = T.Compose(
            [
                ToRGB(),
                T.PILToTensor(),
                T.Resize(resize_size, interpolation=_INTERP[interpolation], antialias=True),
                T.CenterCrop(crop_size),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(mean=list(mean), std=list(std)),
            ]
        )

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> ClassificationPresetEval:
        return cls(cfg.crop_size, cfg.resize_size, cfg.mean, cfg.std, cfg.interpolation)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.transforms(img)


class ClassificationPresetTrain:
    """RandomResizedCrop + flip + TrivialAugment (or colour jitter) + normalise (+ erasing)."""

    def __init__(
        self,
        crop_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        hflip_prob: float = 0.5,
        auto_augment: str | None = "trivialaugment",
        random_erase: float = 0.0,
        min_scale: float = 0.25,
    ) -> None:
        interp = _INTERP[interpolation]
        steps: list[Any] = [
            ToRGB(),
            T.PILToTensor(),
            T.RandomResizedCrop(crop_size, scale=(min_scale, 1.0), interpolation=interp, antialias=True),
        ]
        if hflip_prob > 0:
            steps.append(T.RandomHorizontalFlip(hflip_prob))
        if auto_augment == "trivialaugment":
            steps.append(T.TrivialAugmentWide(interpolation=interp))
        elif auto_augment == "colorjitter":
            steps.append(T.ColorJitter(0.3, 0.3, 0.3, 0.05))
        elif auto_augment is not None:
            raise ValueError(f"unknown auto_augment {auto_augment!r}")
        steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]
        if random_erase > 0:
            steps.append(T.RandomErasing(p=random_erase))
        self.transforms = T.Compose(steps)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.transforms(img)
