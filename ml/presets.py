"""Image transforms for training and for evaluation/inference.

The eval preset is the single source of truth for test-time *and* serving-time
preprocessing, so what the model saw during evaluation is exactly what the site feeds it.

The eval preset computes what torchvision's ``v2`` Resize + CenterCrop + ToDtype + Normalize
compute, bit for bit (a test compares them), with torch alone: importing torchvision took about
1.7 s of every worker start here, and a worker serving cached compiled models needs nothing else
from it. The train preset uses torchvision's augmentations and imports it when built.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ml.imaging import to_rgb

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
    # (height, width): resize the whole frame to it instead of resize + centre crop (which cuts the
    # front and rear off a landscape photo of a car). None: resize_size then crop_size, as before.
    frame_size: tuple[int, int] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the tensor the model gets."""
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


class ToRGB(torch.nn.Module):
    def forward(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side at ``short_side`` and the long side scaled to match, rounded down."""
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def _resizes_uint8_natively(interpolation: str) -> bool:
    # torch's uint8 kernels: antialiased bilinear only with AVX2/AVX-512 or on ARM (else via float32).
    if interpolation == "bilinear":
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in (
            "aarch64",
            "arm64",
        )
    return True


def resize_short_side(image: torch.Tensor, short_side: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a uint8 (C, H, W) image so its short side is ``short_side`` (antialiased, as torchvision does)."""
    return resize(image, resized_size(*image.shape[-2:], short_side), interpolation)


def resize(image: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a uint8 (C, H, W) image to ``size`` = (height, width) (antialiased, as torchvision does)."""
    _check_interpolation(interpolation)
    channels, height, width = image.shape
    new_height, new_width = size
    if (new_height, new_width) == (height, width):
        return image
    batch = image.reshape(1, channels, height, width)
    strides = batch.stride()
    if batch.is_contiguous(memory_format=torch.channels_last) and batch.numel() != strides[0]:
        # A PIL image arrives as a channels-last view; restride so interpolate keeps that layout
        # (otherwise it copies the output into a contiguous one).
        batch = batch.as_strided((1, channels, height, width), (batch.numel(), *strides[1:]))
    native = _resizes_uint8_natively(interpolation)
    smooth = interpolation != "nearest"
    resized = F.interpolate(
        batch if native else batch.float(),
        size=[new_height, new_width],
        mode=interpolation,
        align_corners=False if smooth else None,
        antialias=smooth,
    )
    if not native:
        if interpolation == "bicubic":
            resized = resized.clamp_(0, 255)
        resized = resized.round_().to(torch.uint8)
    return resized.reshape(channels, new_height, new_width)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` square of a (C, H, W) image, zero-padded where the image is smaller."""
    height, width = image.shape[-2:]
    if size > height or size > width:
        pad_x, pad_y = max(size - width, 0), max(size - height, 0)
        image = F.pad(image, [pad_x // 2, (pad_x + 1) // 2, pad_y // 2, (pad_y + 1) // 2], value=0.0)
        height, width = image.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image[..., top : top + size, left : left + size]


def pil_to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """An 8-bit PIL image as a uint8 (C, H, W) tensor (a view of an (H, W, C) copy, as torchvision makes it)."""
    array = np.array(img, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)


class ClassificationPresetEval:
    """Deterministic: to RGB, resize short side and centre crop (or resize the whole frame), tensor, normalise."""

    def __init__(
        self,
        crop_size: int = 224,
        resize_size: int = 256,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        _check_interpolation(interpolation)
        frame = (int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None
        self.config = PreprocessConfig(crop_size, resize_size, tuple(mean), tuple(std), interpolation, frame)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> ClassificationPresetEval:
        return cls(cfg.crop_size, cfg.resize_size, cfg.mean, cfg.std, cfg.interpolation, cfg.frame_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        cfg = self.config
        image = pil_to_uint8_tensor(to_rgb(img))
        if cfg.frame_size is not None:
            image = resize(image, cfg.frame_size, cfg.interpolation)
        else:
            image = center_crop(resize_short_side(image, cfg.resize_size, cfg.interpolation), cfg.crop_size)
        # The same float arithmetic as torchvision's ToDtype(scale=True) and Normalize.
        return image.to(torch.float32).mul_(1.0 / 255).sub(self._mean).div_(self._std)


class ClassificationPresetTrain:
    """RandomResizedCrop + flip + TrivialAugment (or colour jitter) + normalise (+ erasing).

    With ``frame_size`` = (height, width) the random crop is resized to that frame (the whole-frame
    geometry of the eval preset), its aspect ratio (width / height) drawn from ``ratio``.
    """

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
        frame_size: tuple[int, int] | None = None,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        from torchvision.transforms import v2 as T
        from torchvision.transforms.functional import InterpolationMode

        _check_interpolation(interpolation)
        interp = InterpolationMode(interpolation)
        steps: list[Any] = [
            ToRGB(),
            T.PILToTensor(),
            T.RandomResizedCrop(
                list(frame_size) if frame_size is not None else crop_size, scale=(min_scale, 1.0), ratio=ratio,
                interpolation=interp, antialias=True,
            ),
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
