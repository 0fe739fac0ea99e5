from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.bundle import BundleIntegrityError, load_bundle, save_bundle
from ml.data import ManifestRecord, Split
from ml.models import create_model
from ml.predict import Prediction, Predictor
from ml.presets import PreprocessConfig

from .conftest import CAR_PHOTOS, SHAPE_CLASSES

PRE = PreprocessConfig(64, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _save(path: Path, model: torch.nn.Module) -> None:
    save_bundle(
        path,
        model,
        kind="classifier",
        arch="efficientnet_lite0",
        labels=SHAPE_CLASSES,
        preprocess=PRE,
        temperature=1.7,
        abstain_threshold=0.4,
        metrics={"top1": 0.5},
        split=Split([ManifestRecord(Path("a.png"), "red_circle", "g0")], [], [], 0),
        command=["test"],
    )


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("efficientnet_lite0", 3, "imagenet").eval()


def test_round_trip_same_predictions_and_stable_version(
    model: torch.nn.Module, shapes: list[ManifestRecord], tmp_path: Path
) -> None:
    _save(tmp_path / "b1", model)
    _save(tmp_path / "b2", model)
    b1, b2 = load_bundle(tmp_path / "b1"), load_bundle(tmp_path / "b2")
    assert b1.version == b2.version and len(b1.version) == 12  # content hash, not a timestamp
    assert b1.temperature == 1.7 and b1.labels == SHAPE_CLASSES and b1.preprocess == PRE
    assert b1.split() is not None and b1.split().train[0].group == "g0"
    for key in ("python", "torch", "torchvision"):
        assert key in b1.meta["versions"]

    pred = Predictor.from_bundle(tmp_path / "b1", device="cpu")
    pred.warmup()
    images = [r.path for r in shapes[:4]]
    out = pred.predict(images, top_k=2)
    assert len(out) == 4 and all(len(p) == 2 and isinstance(p[0], Prediction) for p in out)
    # same answer every time, and probabilities are the temperature-scaled softmax of the original model
    assert pred.predict(images, top_k=2) == out
    from ml.presets import ClassificationPresetEval

    x = torch.stack([ClassificationPresetEval.from_config(PRE)(Image.open(p)) for p in images])
    with torch.inference_mode():
        ref = (model(x) / 1.7).softmax(1)
    for row, ref_row in zip(out, ref, strict=True):
        assert row[0].probability == pytest.approx(float(ref_row.max()), abs=1e-5)
        assert row[0].label == SHAPE_CLASSES[int(ref_row.argmax())]
    assert pred.kind == "classifier" and pred.arch == "efficientnet_lite0" and pred.version == b1.version
    assert pred.abstain_threshold == 0.4 and pred.labels == SHAPE_CLASSES
    # batch of 1 vs batch of 4 may differ in the last float bits (different kernels), not in the answer
    single = pred.predict_image(Image.open(images[0]), top_k=1)[0]
    assert single.label == out[0][0].label and single.probability == pytest.approx(out[0][0].probability, abs=1e-5)


def test_tampering_is_detected(model: torch.nn.Module, tmp_path: Path) -> None:
    _save(tmp_path / "b", model)
    meta_path = tmp_path / "b" / "bundle.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["temperature"] = 0.1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleIntegrityError):
        load_bundle(tmp_path / "b")
    meta_path.write_text(original)
    load_bundle(tmp_path / "b")  # restored -> fine again
    w = tmp_path / "b" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError):
        load_bundle(tmp_path / "b")


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path)


@pytest.fixture
def exported(model: torch.nn.Module, tmp_path: Path) -> Path:
    """A bundle of ``model`` with its ONNX export."""
    from ml.export import ensure_onnx_export

    _save(tmp_path / "b", model)
    assert ensure_onnx_export(tmp_path / "b") == tmp_path / "b" / "model.onnx"
    return tmp_path / "b"


def test_an_exported_bundle_is_served_by_onnx_runtime_as_torch_serves_it(
    exported: Path, shapes: list[ManifestRecord]
) -> None:
    meta = json.loads((exported / "onnx.json").read_text())
    assert meta["bundle_version"] == load_bundle(exported).version and meta["opset"] >= 13
    assert 0 <= meta["max_abs_difference"] <= 1e-4
    assert "onnx" not in load_bundle(exported).meta  # bundle.json (content-hashed) is untouched

    onnx = Predictor.from_bundle(exported, num_threads=1)
    eager = Predictor.from_bundle(exported, backend="torch")
    assert (onnx.backend, eager.backend) == ("onnxruntime", "torch")
    onnx.warmup()
    images = [r.path for r in shapes[:4]]
    got, expected = onnx.probabilities(images), eager.probabilities(images)
    assert got.shape == expected.shape == (4, len(SHAPE_CLASSES))
    assert float(np.abs(got - expected).max()) <= 1e-5
    assert [p[0].label for p in onnx.predict(images)] == [p[0].label for p in eager.predict(images)]
    assert np.array_equal(onnx.probabilities(images), got), "the same photos give the same answer"


def test_a_model_with_pooled_stages_is_served_from_its_bundle_as_it_was_trained(
    shapes: list[ManifestRecord], tmp_path: Path
) -> None:
    from ml.export import ensure_onnx_export
    from ml.presets import ClassificationPresetEval

    torch.manual_seed(0)
    pooled = create_model("efficientnet_lite0", 3, "imagenet", pooled_stages=(3, 4, 5, 6)).eval()
    _save(tmp_path / "b", pooled)
    assert load_bundle(tmp_path / "b").pooled_stages == [3, 4, 5, 6]
    assert ensure_onnx_export(tmp_path / "b") is not None
    images = [r.path for r in shapes[:4]]
    x = torch.stack([ClassificationPresetEval.from_config(PRE)(Image.open(p)) for p in images])
    with torch.inference_mode():
        expected = (pooled(x) / 1.7).softmax(1).numpy()
    for backend in ("torch", "onnxruntime"):
        served = Predictor.from_bundle(tmp_path / "b", backend=backend, num_threads=1)
        assert served.backend == backend
        assert float(np.abs(served.probabilities(images) - expected).max()) <= 1e-5, backend


def test_serving_prepares_exactly_what_training_evaluation_prepares(
    exported: Path, shapes: list[ManifestRecord]
) -> None:
    from ml.presets import ClassificationPresetEval

    car_photos = sorted(CAR_PHOTOS.rglob("*.jpg"))[:4]
    assert car_photos, f"no shared photos under {CAR_PHOTOS}"
    images = [r.path for r in shapes[:2]] + car_photos
    served = Predictor.from_bundle(exported).preprocess(images)
    evaluated = torch.stack([ClassificationPresetEval.from_config(PRE)(Image.open(p)) for p in images])
    assert served.dtype == np.float32 and np.array_equal(served, evaluated.numpy())


@pytest.mark.parametrize("damage", ["stale", "truncated"])
def test_an_export_that_is_not_this_bundles_is_not_served(exported: Path, damage: str) -> None:
    if damage == "stale":  # made from another version of the bundle
        meta_path = exported / "onnx.json"
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "bundle_version": "0" * 12}))
    else:  # a copy cut short
        onnx_path = exported / "model.onnx"
        onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    assert Predictor.from_bundle(exported).backend == "torch"
    with pytest.raises(FileNotFoundError, match="no ONNX export"):
        Predictor.from_bundle(exported, backend="onnxruntime")


def test_an_export_that_does_not_match_torch_is_refused_with_a_reason(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ml import export

    _save(tmp_path / "b", model)
    run_onnx = export._run_onnx
    monkeypatch.setattr(export, "_run_onnx", lambda path, x: run_onnx(path, x) + 1e-3)

    assert export.ensure_onnx_export(tmp_path / "b") is None
    assert "differs from torch by 0.001" in caplog.text
    assert not (tmp_path / "b" / "model.onnx").exists() and not (tmp_path / "b" / "onnx.json").exists()
    assert [p.name for p in (tmp_path / "b").iterdir() if p.name.startswith(".")] == []  # no temporary left
    assert Predictor.from_bundle(tmp_path / "b").backend == "torch"


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_batch_prepared_once_gives_the_same_answers(
    exported: Path, shapes: list[ManifestRecord], backend: str
) -> None:
    first = Predictor.from_bundle(exported, backend=backend)
    second = Predictor.from_bundle(exported, backend=backend)
    images = [r.path for r in shapes[:3]]
    assert second.same_preprocessing(first)

    batch = first.preprocess(images)

    assert second.predict_batch(batch, top_k=3) == second.predict(images, top_k=3)
    assert second.predict_batch(batch[[0, 2]], top_k=3) == second.predict([images[0], images[2]], top_k=3)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_one_photo_per_forward_pass_answers_the_same_whatever_the_batch(
    exported: Path, shapes: list[ManifestRecord], backend: str
) -> None:
    per_photo = Predictor.from_bundle(exported, forward_batch_size=1, backend=backend)
    whole = Predictor.from_bundle(exported, backend=backend)
    images = [r.path for r in shapes[:5]]

    alone = [per_photo.probabilities([image])[0] for image in images]
    together = per_photo.probabilities(images)

    # Bit for bit: a photo's answer does not depend on which photos shared its batch.
    for one, batched in zip(alone, together, strict=True):
        assert np.array_equal(one, batched)
    assert np.allclose(together, whole.probabilities(images), atol=1e-5)
    assert per_photo.probabilities([]).shape == (0, len(SHAPE_CLASSES))
