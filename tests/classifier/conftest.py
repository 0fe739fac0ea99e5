"""Fixtures for the model registry tests: isolated model store, small bundles and generated photos."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


@pytest.fixture(autouse=True)
def _isolated_models_dir(settings, tmp_path_factory):
    """Every test registers bundles into its own model store, never into var/models."""
    models = tmp_path_factory.mktemp("models")
    settings.CARSITE_MODELS_DIR = models
    settings.CARSITE_INFERENCE_THREADS = 2
    from classifier.runtime import clear_loaded_models

    clear_loaded_models()
    yield models
    clear_loaded_models()
    shutil.rmtree(models, ignore_errors=True)


@pytest.fixture(scope="session")
def zero_shot_gate_bundle(tmp_path_factory) -> Path:
    """The zero-shot gate bundle, built once per session (it is the same ImageNet network every time)."""
    from ml.gate import build_zero_shot_gate

    return build_zero_shot_gate(tmp_path_factory.mktemp("gate") / "zero-shot")


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory) -> Callable[..., Path]:
    """Factory for small random-weight bundles: make_bundle(labels, kind="classifier", seed=0)."""
    import torch

    from ml.bundle import save_bundle
    from ml.models import create_model, default_preprocess
    from ml.presets import PreprocessConfig

    cache: dict[tuple, Path] = {}

    def make(labels: list[str], kind: str = "classifier", seed: int = 0, metrics: dict | None = None) -> Path:
        key = (tuple(labels), kind, seed, tuple(sorted((metrics or {}).items())))
        if key not in cache:
            torch.manual_seed(seed)
            model = create_model("efficientnet_lite0", len(labels), weights=None).eval()
            base = default_preprocess("efficientnet_lite0")
            out = tmp_path_factory.mktemp("bundle") / "bundle"
            save_bundle(
                out,
                model,
                kind=kind,
                arch="efficientnet_lite0",
                labels=labels,
                preprocess=PreprocessConfig(64, 72, base.mean, base.std, base.interpolation),
                metrics=metrics or {"top1": 0.5, "ece_calibrated": 0.1},
                command=["test"],
            )
            cache[key] = out
        return cache[key]

    return make


def draw_photo(path: Path, *, seed: int, colour: tuple[int, int, int], size: tuple[int, int] = (160, 120)) -> Path:
    """A distinct synthetic 'photo': a coloured background with random shapes (so hashes differ)."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(10, 80), y0 + rng.randrange(10, 60)
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)
    return path


@pytest.fixture
def photo_factory() -> Callable[..., Path]:
    return draw_photo
