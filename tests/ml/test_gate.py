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


@pytest.fixture(scope="module")
def head_only_gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A view gate trained head-only for a few steps on generated images: enough to test the joining."""
    from PIL import Image

    from ml.data import ManifestRecord, split_grouped
    from ml.train import TrainConfig, fit_bundle

    root = tmp_path_factory.mktemp("views")
    records = []
    for i in range(18):
        view = GATE_LABELS[i % 3]
        path = root / f"{view}-{i}.png"
        Image.new("RGB", (96, 96), ((90 * i) % 256, 40 * (i % 3), 200 - 9 * i)).save(path)
        records.append(ManifestRecord(path, view, group=str(i)))
    split = split_grouped(records, 0.2, 0.0, 0)
    config = TrainConfig(epochs_head=1, epochs_finetune=0, batch_size=6, crop_size=96, auto_augment=None,
                         warmup_epochs=0, max_steps_per_epoch=2)
    out = root / "head"
    fit_bundle(config, split, out, kind="gate", labels=GATE_LABELS, work_dir=root / "work", progress=False)
    return out


def test_hybrid_gate_says_other_for_a_photo_without_a_car(head_only_gate: Path, tmp_path: Path, grace_hopper) -> None:
    from ml.gate import hybrid_gate_from_trained

    hybrid = Predictor.from_bundle(hybrid_gate_from_trained(head_only_gate, tmp_path / "hybrid"), device="cpu")
    assert hybrid.bundle.mode == "hybrid_gate" and hybrid.labels == GATE_LABELS
    assert hybrid.bundle.num_outputs == 1000 + 3
    out = hybrid.predict([grace_hopper], top_k=3)[0]
    assert out[0].label == "other" and out[0].probability > 0.9
    assert sum(p.probability for p in out) == pytest.approx(1.0, abs=1e-5)


def test_hybrid_gate_keeps_the_trained_view_head_for_car_photos(
    head_only_gate: Path, tmp_path: Path, car_rows: list[dict[str, str]]
) -> None:
    import torch
    from PIL import Image

    from ml.gate import hybrid_gate_from_trained

    trained = Predictor.from_bundle(head_only_gate, device="cpu")
    hybrid = Predictor.from_bundle(hybrid_gate_from_trained(head_only_gate, tmp_path / "hybrid"), device="cpu")
    photo = next(CAR_PHOTOS / "images" / r["file"] for r in car_rows if r["view"] == "exterior")
    with Image.open(photo) as image:
        x = trained.transform(image).unsqueeze(0)
    with torch.inference_mode():
        joined_logits = hybrid.model(x)
        view_logits = trained.model(x)
    # The last three outputs of the joined head are exactly the trained view head's.
    assert torch.allclose(joined_logits[:, -3:], view_logits, atol=1e-4)


def test_hybrid_gate_refuses_a_fine_tuned_backbone(head_only_gate: Path, tmp_path: Path) -> None:
    import torch

    from ml.bundle import load_bundle, save_bundle
    from ml.gate import hybrid_gate_from_trained

    bundle = load_bundle(head_only_gate)
    model = bundle.load_model()
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # the first backbone tensor no longer matches ImageNet
    tuned = tmp_path / "tuned"
    save_bundle(tuned, model, kind="gate", arch=bundle.arch, labels=GATE_LABELS, preprocess=bundle.preprocess)
    with pytest.raises(ValueError, match="head-only"):
        hybrid_gate_from_trained(tuned, tmp_path / "hybrid")
