from __future__ import annotations

from pathlib import Path

import pytest
from PIL import UnidentifiedImageError

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
    with pytest.raises(UnidentifiedImageError):
        gate.predict([img])


def _view_photos(root: Path, per_view: int = 6) -> list:
    """Generated 'photos' of the three views, each its own near-duplicate group."""
    from PIL import Image

    from ml.data import ManifestRecord

    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(3 * per_view):
        view = GATE_LABELS[i % 3]
        path = root / f"{view}-{i}.png"
        Image.new("RGB", (128, 96), ((90 * i) % 256, 40 * (i % 3), 200 - 9 * i)).save(path)
        records.append(ManifestRecord(path, view, group=str(i)))
    return records


# 96 px inputs and few views keep the backbone passes cheap; the ImageNet head still recognises a portrait.
TINY_RECIPE = dict(crop_size=96, crops=1, close_ups=1)


@pytest.fixture(scope="module")
def trained_gate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from ml.gate import GateRecipe, train_gate

    root = tmp_path_factory.mktemp("views")
    metrics = train_gate(_view_photos(root / "photos"), root / "gate", GateRecipe(**TINY_RECIPE), k=3)
    return root / "gate", metrics


def test_trained_gate_says_other_for_a_photo_without_a_car(trained_gate, grace_hopper) -> None:
    hybrid = Predictor.from_bundle(trained_gate[0], device="cpu")
    assert hybrid.bundle.mode == "hybrid_gate" and hybrid.labels == GATE_LABELS
    assert hybrid.bundle.num_outputs == 1000 + 3
    out = hybrid.predict([grace_hopper], top_k=3)[0]
    assert out[0].label == "other" and out[0].probability > 0.9
    assert sum(p.probability for p in out) == pytest.approx(1.0, abs=1e-5)


def test_trained_gate_keeps_the_imagenet_head_beside_the_view_head(trained_gate, car_rows) -> None:
    import torch
    from PIL import Image

    from ml.models import create_model

    hybrid = Predictor.from_bundle(trained_gate[0], backend="torch")
    imagenet = create_model("efficientnet_lite0", 1000, weights="imagenet").eval()
    photo = next(CAR_PHOTOS / "images" / r["file"] for r in car_rows if r["view"] == "exterior")
    with Image.open(photo) as image:
        x = hybrid.preprocess([image])
    joined = hybrid.model(x)
    with torch.inference_mode():
        assert torch.allclose(torch.from_numpy(joined[:, :1000]), imagenet(torch.from_numpy(x)), atol=1e-4)


def test_trained_gate_metrics_are_out_of_fold_over_every_photo(trained_gate) -> None:
    _, metrics = trained_gate
    assert metrics["evaluated_on"] == "cross-validation"
    assert (metrics["cv_folds"], metrics["n"], metrics["n_train"]) == (3, 18, 18)
    for view in GATE_LABELS:
        assert 0.0 <= metrics[f"recall_{view}"] <= 1.0
    assert metrics["macro_recall"] == pytest.approx(sum(metrics[f"recall_{v}"] for v in GATE_LABELS) / 3)


def test_training_the_gate_again_gives_the_same_bundle(trained_gate, tmp_path: Path) -> None:
    from ml.bundle import load_bundle
    from ml.gate import GateRecipe, train_gate

    records = _view_photos(tmp_path / "photos")
    train_gate(records, tmp_path / "again", GateRecipe(**TINY_RECIPE), k=3)
    assert load_bundle(tmp_path / "again").version == load_bundle(trained_gate[0]).version


def test_gate_cross_validation_scores_each_photo_with_a_head_that_never_saw_it(tmp_path: Path, monkeypatch) -> None:
    import torch

    from ml import gate

    records = _view_photos(tmp_path / "photos")
    features = gate.gate_features(records, gate.GateRecipe(**TINY_RECIPE))
    fitted_on: list[set] = []
    fit = gate.fit_view_head

    def recording_fit(x, y, recipe):
        fitted_on.append({tuple(row.tolist()) for row in x})
        return fit(x, y, recipe)

    monkeypatch.setattr(gate, "fit_view_head", recording_fit)
    cv = gate.cross_validate_gate(features, gate.GateRecipe(**TINY_RECIPE), k=3)
    assert len(fitted_on) == 3 and sorted(set(cv.folds)) == [0, 1, 2]
    for fold, seen in enumerate(fitted_on):
        held_out = [i for i, f in enumerate(cv.folds) if f == fold]
        for i in held_out:
            assert not {tuple(row.tolist()) for row in features.views[i]} & seen
    assert torch.isfinite(cv.logits).all() and cv.logits.shape == (18, 3)


def test_the_hybrid_gate_answers_the_same_from_its_onnx_export(trained_gate, grace_hopper, car_rows) -> None:
    import numpy as np

    from ml.export import ensure_onnx_export

    assert ensure_onnx_export(trained_gate[0]) is not None
    onnx = Predictor.from_bundle(trained_gate[0])
    eager = Predictor.from_bundle(trained_gate[0], backend="torch")
    assert onnx.backend == "onnxruntime"
    photos = [grace_hopper] + [CAR_PHOTOS / "images" / r["file"] for r in car_rows[:3]]
    assert float(np.abs(onnx.probabilities(photos) - eager.probabilities(photos)).max()) <= 1e-5
