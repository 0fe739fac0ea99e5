"""Only photos the gate calls exterior reach the classifier: a fixed-answer gate bundle and a classifier spy."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.models import Classification, ClassificationPrediction, ClassificationStatus
from classifier.services.execution import classification_run
from classifier.services.intake import Upload, classification_create
from tests.classification.conftest import _register_and_activate, image_bytes

pytestmark = pytest.mark.django_db

GATE_LABELS = ["exterior", "interior", "other"]


def _fixed_bundle(out: Path, *, kind: str, labels: list[str], answer: int, crop: int = 64) -> Path:
    """A softmax bundle whose head ignores the photo: output ``answer`` always wins by far."""
    import torch

    from ml.bundle import save_bundle
    from ml.models import create_model, default_preprocess, head_module
    from ml.presets import PreprocessConfig

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", len(labels), weights=None).eval()
    with torch.no_grad():
        head_module(model).weight.zero_()
        head_module(model).bias.zero_()
        head_module(model).bias[answer] = 10.0
    base = default_preprocess("efficientnet_lite0")
    save_bundle(
        out,
        model,
        kind=kind,
        arch="efficientnet_lite0",
        labels=labels,
        preprocess=PreprocessConfig(crop, crop + 8, base.mean, base.std, base.interpolation),
        command=["test"],
    )
    return out


@pytest.fixture
def classifier_calls(db, models_dir, clean_runtime, tmp_path, monkeypatch) -> list[int]:
    """An active classifier that records how many photos each of its calls received."""
    from ml.predict import Predictor

    _register_and_activate(
        _fixed_bundle(tmp_path / "classifier", kind="classifier", labels=["Acura MDX", "Acura RDX"], answer=0)
    )
    calls: list[int] = []
    predict, predict_batch = Predictor.predict, Predictor.predict_batch

    def spy_predict(self, images, top_k=5):
        if self.kind == "classifier":
            calls.append(len(images))
        return predict(self, images, top_k)

    def spy_predict_batch(self, x, top_k=5):
        if self.kind == "classifier":
            calls.append(len(x))
        return predict_batch(self, x, top_k)

    monkeypatch.setattr(Predictor, "predict", spy_predict)
    monkeypatch.setattr(Predictor, "predict_batch", spy_predict_batch)
    return calls


def _activate_fixed_gate(tmp_path: Path, verdict: str):
    return _register_and_activate(
        _fixed_bundle(tmp_path / f"gate-{verdict}", kind="gate", labels=GATE_LABELS, answer=GATE_LABELS.index(verdict))
    )


def _photos(count: int) -> list[bytes]:
    return [image_bytes(color=(40 * i, 200 - 30 * i, 90)) for i in range(count)]


@pytest.mark.parametrize("verdict", ["other", "interior"])
def test_a_photo_the_gate_rejects_never_reaches_the_classifier(classifier_calls, tmp_path, verdict):
    gate = _activate_fixed_gate(tmp_path, verdict)
    jobs = [classification_create(Upload(data, f"photo{i}.jpg")) for i, data in enumerate(_photos(3))]

    for job in jobs:
        classification_run(job.pk)

    assert classifier_calls == []
    done = Classification.objects.filter(pk__in=[job.pk for job in jobs])
    assert (
        list(done.values_list("status", "gate_verdict", "gate_version_id", "classifier_version_id"))
        == [(ClassificationStatus.DONE, verdict, gate.pk, None)] * 3
    )
    assert not ClassificationPrediction.objects.exists()
    assert list(done.values_list("predicted_car_model_id", "classifier_ms")) == [(None, None)] * 3


def test_a_photo_the_gate_calls_exterior_is_classified(classifier_calls, tmp_path):
    """The same set-up with the gate saying exterior: the spy does see the photos, so it would catch a leak."""
    _activate_fixed_gate(tmp_path, "exterior")
    jobs = [classification_create(Upload(data, f"photo{i}.jpg")) for i, data in enumerate(_photos(3))]

    for job in jobs:
        classification_run(job.pk)

    assert sum(classifier_calls) == 3
    assert ClassificationPrediction.objects.filter(classification__in=jobs, rank=1).count() == 3


def test_a_classifier_of_another_input_size_than_the_gate_gets_the_photo_at_its_own(
    db, models_dir, clean_runtime, tmp_path
):
    """The demo's gate (lite0, 224) and classifier (lite1, 240) prepare photos differently: the gate's batch is
    reused only when the preprocessing is the same, and an ONNX export takes no other size."""
    _activate_fixed_gate(tmp_path, "exterior")
    classifier = _register_and_activate(
        _fixed_bundle(
            tmp_path / "classifier-48", kind="classifier", labels=["Acura MDX", "Acura RDX"], answer=1, crop=48
        ),
    )
    job = classification_create(Upload(_photos(1)[0], "photo.jpg"))

    classification_run(job.pk)

    job.refresh_from_db()
    assert (job.status, job.classifier_version_id, job.error) == (ClassificationStatus.DONE, classifier.pk, "")
    assert job.predictions.get(rank=1).label == "Acura RDX"
