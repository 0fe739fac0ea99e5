"""Image transforms for training and for evaluation.

The eval transform itself is ``ml.preprocess.eval_array`` (numpy and Pillow, what serving runs);
``ClassificationPresetEval`` only hands its result to torch, so what a model saw during evaluation is
exactly what the site feeds it. The train preset uses torchvision's augmentations and imports it when built.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from ml.preprocess import (  # noqa: F401  (re-exported: the names training code has always used)
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    LITE_MEAN,
    LITE_STD,
    PreprocessConfig,
    check_interpolation,
    eval_array,
    to_rgb,
)


class ToRGB(torch.nn.Module):
    def forward(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)


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
        check_interpolation(interpolation)
        frame = (int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None
        mean3, std3 = (float(mean[0]), float(mean[1]), float(mean[2])), (float(std[0]), float(std[1]), float(std[2]))
        self.config = PreprocessConfig(crop_size, resize_size, mean3, std3, interpolation, frame)

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> ClassificationPresetEval:
        return cls(cfg.crop_size, cfg.resize_size, cfg.mean, cfg.std, cfg.interpolation, cfg.frame_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(eval_array(img, self.config))


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

        check_interpolation(interpolation)
        interp = InterpolationMode(interpolation)
        steps: list[Any] = [
            ToRGB(),
            T.PILToTensor(),
            T.RandomResizedCrop(
                list(frame_size) if frame_size is not None else crop_size,
                scale=(min_scale, 1.0),
                ratio=ratio,
                interpolation=interp,
                antialias=True,
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
