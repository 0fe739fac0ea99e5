from __future__ import annotations

from pathlib import Path

import pytest

from ml.gate import GATE_LABELS, build_zero_shot_gate, imagenet_groups
from ml.models import IMAGENET_CLASSES
from ml.predict import Predictor

from .conftest import CAR_PHOTOS


def test_groups_use_real_imagenet_names() -> None:
    g = imagenet_groups()
    names = {IMAGENET_CLASSES[i] for i in g["exterior"]}
    assert {"sports car", "convertible", "minivan", "pickup"} <= names
    assert "car wheel" not in names
    assert {IMAGENET_CLASSES[i] for i in g["interior"]} >= {"seat belt", "odometer"}
    assert not set(g["exterior"]) & set(g["interior"])


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    path = build_zero_shot_gate(tmp_path_factory.mktemp("gate") / "gate0")
    return Predictor.from_bundle(path, device="cpu")


def test_zero_shot_gate_bundle(gate: Predictor, grace_hopper) -> None:
    assert gate.kind == "gate" and gate.bundle.mode == "imagenet_groups" and gate.labels == GATE_LABELS
    out = gate.predict([grace_hopper], top_k=3)[0]
    assert out[0].label == "other"
    assert sum(p.probability for p in out) == pytest.approx(1.0, abs=1e-5)


def test_zero_shot_gate_on_real_exterior_photos(gate: Predictor, car_rows: list[dict[str, str]]) -> None:
    ext = [r for r in car_rows if r["view"] == "exterior" and r["subject"] == "labelled-model"][:8:2]
    preds = gate.predict([CAR_PHOTOS / "images" / r["file"] for r in ext], top_k=1)
    labels = [p[0].label for p in preds]
    assert labels.count("exterior") >= 3, labels


def test_gate_rejects_non_image(gate: Predictor) -> None:
    img = Path(__file__)  # not an image: must raise, not guess
    with pytest.raises(Exception):  # noqa: B017 - PIL raises UnidentifiedImageError
        gate.predict([img])
