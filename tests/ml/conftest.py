"""Fixtures for the ml package tests (plain PyTorch, no Django)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ml.data import ManifestRecord
from tests.conftest import SHARED_DATA as SHARED

torch.set_num_threads(2)

CAR_PHOTOS = SHARED / "car-photos"

SHAPE_CLASSES = ["red_circle", "green_square", "blue_triangle"]


def draw_shape(label: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A coloured shape at a random position/size on a noisy grey background."""
    bg = rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8)
    img = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    jitter = tuple(int(v) for v in rng.integers(-30, 30, size=3))
    if label == "red_circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(220 + jitter[0] // 3, 30 + jitter[1] // 3, 30))
    elif label == "green_square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=(30, 200 + jitter[1] // 3, 40 + jitter[2] // 3))
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=(40, 40 + jitter[0] // 3, 220))
    return img


def make_shapes(root: Path, per_class: int, seed: int = 0) -> list[ManifestRecord]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for label in SHAPE_CLASSES:
        for i in range(per_class):
            p = root / f"{label}_{i}.png"
            draw_shape(label, rng).save(p)
            records.append(ManifestRecord(p, label))
    return records


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> list[ManifestRecord]:
    return make_shapes(tmp_path_factory.mktemp("shapes"), per_class=24)


@pytest.fixture(scope="session")
def grace_hopper() -> Image.Image:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return im.copy()


@pytest.fixture(scope="session")
def car_rows() -> list[dict[str, str]]:
    import csv

    manifest = CAR_PHOTOS / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"shared car photos not available at {CAR_PHOTOS}")
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))
