from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ml.bundle import Bundle, BundleIntegrityError, load_bundle, save_bundle
from ml.data import ManifestRecord, Split
from ml.models import create_model
from ml.predict import Prediction, Predictor
from ml.presets import PreprocessConfig

from .conftest import SHAPE_CLASSES

PRE = PreprocessConfig(64, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _save(path: Path, model: torch.nn.Module) -> None:
    save_bundle(
        path, model, kind="classifier", arch="efficientnet_lite0", labels=SHAPE_CLASSES, preprocess=PRE,
        temperature=1.7, abstain_threshold=0.4, metrics={"top1": 0.5},
        split=Split([ManifestRecord(Path("a.png"), "red_circle", "g0")], [], [], 0), command=["test"],
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


def test_predictor_runs_a_traced_graph_that_matches_the_eager_model(
    model: torch.nn.Module, shapes: list[ManifestRecord], tmp_path: Path
) -> None:
    _save(tmp_path / "b", model)
    compiled = Predictor.from_bundle(tmp_path / "b", device="cpu")
    eager = Predictor.from_bundle(tmp_path / "b", device="cpu", compile_model=False)
    assert compiled.compiled and isinstance(compiled.model, torch.jit.ScriptModule)
    assert not eager.compiled and not isinstance(eager.model, torch.jit.ScriptModule)
    images = [r.path for r in shapes[:3]]  # a batch size the graph was not traced with
    for got, expected in zip(compiled.probabilities(images), eager.probabilities(images), strict=True):
        assert torch.allclose(got, expected, atol=1e-5)


class _BatchDependent(torch.nn.Module):
    """Python control flow on the batch size: a trace at batch 1 records only one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled * 2 if x.shape[0] == 1 else pooled


def test_a_model_the_trace_does_not_reproduce_stays_eager() -> None:
    from ml.predict import compile_for_inference

    assert compile_for_inference(_BatchDependent().eval(), 8, torch.device("cpu")) is None


def _no_tracing(*args: object, **kwargs: object) -> None:
    raise AssertionError("traced again although a usable compiled graph was cached")


def _predictor_with_cached_graph(model: torch.nn.Module, tmp_path: Path) -> tuple[Predictor, Path, Path]:
    """A predictor of ``model`` that compiled it into a fresh cache: (predictor, cache dir, the one graph file)."""
    _save(tmp_path / "b", model)
    cache = tmp_path / "compiled"
    predictor = Predictor.from_bundle(tmp_path / "b", device="cpu", compiled_cache_dir=cache)
    [cached_file] = cache.iterdir()
    return predictor, cache, cached_file


def test_a_cached_compiled_graph_is_reused_by_the_next_process(
    model: torch.nn.Module, shapes: list[ManifestRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, cache, cached_file = _predictor_with_cached_graph(model, tmp_path)
    assert first.bundle.version in cached_file.name and "64px" in cached_file.name

    monkeypatch.setattr(torch.jit, "trace", _no_tracing)
    monkeypatch.setattr(Bundle, "load_model", _no_tracing)  # nor is the eager model built
    second = Predictor.from_bundle(tmp_path / "b", device="cpu", compiled_cache_dir=cache)
    assert second.compiled
    images = [r.path for r in shapes[:3]]
    assert torch.equal(second.probabilities(images), first.probabilities(images))


def test_an_unreadable_cached_graph_is_compiled_again_and_replaced(
    model: torch.nn.Module, shapes: list[ManifestRecord], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference, cache, cached_file = _predictor_with_cached_graph(model, tmp_path)
    cached_file.write_bytes(cached_file.read_bytes()[:1000])  # a write cut short

    again = Predictor.from_bundle(tmp_path / "b", device="cpu", compiled_cache_dir=cache)
    assert again.compiled and "ignoring the cached compiled model" in caplog.text
    images = [r.path for r in shapes[:3]]
    assert torch.equal(again.probabilities(images), reference.probabilities(images))
    assert cached_file.stat().st_size > 1000 and list(cache.iterdir()) == [cached_file]


def test_a_cache_that_cannot_be_written_only_costs_the_compile(
    model: torch.nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _save(tmp_path / "b", model)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    predictor = Predictor.from_bundle(tmp_path / "b", device="cpu", compiled_cache_dir=blocker / "compiled")
    assert predictor.compiled and "could not cache the compiled model" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "not-a-directory"]  # no temporary file left


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_cached_graph_that_does_not_give_its_check_output_is_not_used(
    model: torch.nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ml.predict import compile_for_inference, load_compiled

    cache_path, other_path = tmp_path / "graph.pt", tmp_path / "other.pt"
    assert compile_for_inference(model, 64, torch.device("cpu"), cache_path) is not None
    assert load_compiled(cache_path, 64, torch.device("cpu")) is not None
    # Another model's graph under this name, with this model's check output: it must be refused.
    torch.manual_seed(1)
    other = create_model("efficientnet_lite0", 3, "imagenet").eval()
    assert compile_for_inference(other, 64, torch.device("cpu"), other_path) is not None
    extra = {"expected_output.pt": b""}
    torch.jit.load(str(cache_path), _extra_files=extra)
    torch.jit.save(torch.jit.load(str(other_path)), str(cache_path), _extra_files=extra)

    assert load_compiled(cache_path, 64, torch.device("cpu")) is None
    assert "does not reproduce its check output" in caplog.text


def test_a_batch_prepared_once_gives_the_same_answers(
    model: torch.nn.Module, shapes: list[ManifestRecord], tmp_path: Path
) -> None:
    _save(tmp_path / "b", model)
    first = Predictor.from_bundle(tmp_path / "b", device="cpu")
    second = Predictor.from_bundle(tmp_path / "b", device="cpu")
    images = [r.path for r in shapes[:3]]
    assert second.same_preprocessing(first)

    batch = first.preprocess(images)

    assert second.predict_batch(batch, top_k=3) == second.predict(images, top_k=3)
    assert second.predict_batch(batch[[0, 2]], top_k=3) == second.predict([images[0], images[2]], top_k=3)


def test_one_photo_per_forward_pass_answers_the_same_whatever_the_batch(
    model: torch.nn.Module, shapes: list[ManifestRecord], tmp_path: Path
) -> None:
    _save(tmp_path / "b", model)
    per_photo = Predictor.from_bundle(tmp_path / "b", device="cpu", forward_batch_size=1)
    whole = Predictor.from_bundle(tmp_path / "b", device="cpu")
    images = [r.path for r in shapes[:5]]

    alone = [per_photo.probabilities([image])[0] for image in images]
    together = per_photo.probabilities(images)

    # Bit for bit: a photo's answer does not depend on which photos shared its batch.
    for one, batched in zip(alone, together, strict=True):
        assert torch.equal(one, batched)
    assert torch.allclose(together, whole.probabilities(images), atol=1e-5)
    assert per_photo.probabilities([]).shape == (0, len(SHAPE_CLASSES))
