"""Classification jobs: accept an uploaded photo, then run the gate and the classifier on it.

The website, the REST API and the Celery task all come through here. An upload is validated and
normalised once (``catalog.imaging.normalise``) in the request; only the upright RGB JPEG is stored.
``classification_run`` is idempotent: a finished job is never redone, a job whose worker died is
redone from scratch, and the result is written in one transaction so a job never has two sets of
predictions.

No active gate: the photo is treated as an exterior (``gate_verdict`` stays blank and the result
page says the gate was unavailable), because refusing every photo would make the site useless while
the gate is being rebuilt. No active classifier: the job finishes with no predictions and the result
page explains how to train one.
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from catalog import imaging
from catalog.naming import MULTI_WORD_MAKES, LabelError, official_make, parse_label
from classifier.models import (
    Classification,
    ClassificationPrediction,
    ClassificationStatus,
    GateVerdict,
    ModelKind,
    ModelVersion,
)

logger = logging.getLogger(__name__)

TOP_K = 5
MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class Upload:
    """One uploaded file as received: its bytes and the name the visitor gave it."""

    data: bytes
    filename: str = ""


def upload_read(file: Any, limits: imaging.ImageLimits | None = None) -> Upload:
    """Read a Django UploadedFile, refusing one over the byte limit before reading it into memory."""
    limits = limits or imaging.limits_from_settings()
    size = getattr(file, "size", None)
    if size is not None and size > limits.max_bytes:
        raise imaging.ImageRejected(
            f"The file is {size / (1024 * 1024):.0f} MB; the limit is {limits.max_bytes / (1024 * 1024):.0f} MB.",
            "too_large",
        )
    data = file.read(limits.max_bytes + 1)
    return Upload(data=data, filename=os.path.basename(getattr(file, "name", "") or "")[:255])


def batch_limit() -> int:
    return int(getattr(settings, "CARSITE_CLASSIFY_BATCH_LIMIT", 10))


def classification_create(
    upload: Upload, *, session_key: str = "", user: Any = None, limits: imaging.ImageLimits | None = None
) -> Classification:
    """Validate one upload, store it and queue its classification. Raises ``ImageRejected``."""
    return classification_create_batch([upload], session_key=session_key, user=user, limits=limits)[0]


def classification_create_batch(
    uploads: Sequence[Upload],
    *,
    session_key: str = "",
    user: Any = None,
    limits: imaging.ImageLimits | None = None,
) -> list[Classification]:
    """Validate every upload first, then store them all in one transaction: one bad image rejects the batch."""
    if not uploads:
        raise imaging.ImageRejected("No image was uploaded.", "missing_image")
    if len(uploads) > batch_limit():
        raise imaging.ImageRejected(
            f"{len(uploads)} images were sent; at most {batch_limit()} can be classified in one request.",
            "too_many_images",
        )
    limits = limits or imaging.limits_from_settings()
    normalised: list[tuple[Upload, imaging.NormalisedImage]] = []
    for index, upload in enumerate(uploads):
        try:
            normalised.append((upload, imaging.normalise(upload.data, limits)))
        except imaging.ImageRejected as exc:
            if len(uploads) == 1:
                raise
            name = upload.filename or f"image {index + 1}"
            raise imaging.ImageRejected(f"{name}: {exc}", exc.code) from exc

    owner = user if user is not None and getattr(user, "is_authenticated", False) else None
    created: list[Classification] = []
    stored_files: list[Classification] = []
    try:
        with transaction.atomic():
            for upload, image in normalised:
                classification = Classification(
                    id=uuid.uuid4(),
                    original_filename=upload.filename,
                    sha256=image.sha256,
                    session_key=session_key or "",
                    user=owner,
                    created_at=timezone.now(),
                )
                # The name comes from the UUID (see classification_upload_to): never a visitor's file name.
                classification.image.save("upload.jpg", ContentFile(image.jpeg), save=False)
                # Known from normalising: set after the save, which would otherwise re-read them from the file.
                classification.width, classification.height = image.width, image.height
                stored_files.append(classification)
                classification.save(force_insert=True)
                created.append(classification)
                transaction.on_commit(_enqueue_callback(classification.pk))
    except Exception:
        for classification in stored_files:
            classification.image.delete(save=False)
        raise
    return created


def _enqueue_callback(classification_id: uuid.UUID) -> Callable[[], None]:
    def enqueue() -> None:
        from classifier.tasks import classify

        try:
            classify.delay(str(classification_id))
        except Exception:
            # The upload is committed; say what happened on the job rather than answering with a 500.
            logger.exception("could not queue classification %s", classification_id)
            _fail(classification_id, "The photo could not be queued for classification; please try again later.")

    return enqueue


# --- running a job ---


@dataclass(frozen=True)
class _Outcome:
    gate_verdict: str
    gate_confidence: float | None
    gate_version_id: int | None
    classifier_version_id: int | None
    predictions: list[dict[str, Any]]
    abstained: bool
    make_fallback: list[dict[str, Any]]
    decode_ms: float
    gate_ms: float | None
    classifier_ms: float | None


def _get_active_model(kind: str) -> Any:
    from classifier.runtime import get_active_model

    return get_active_model(kind)


def _model_version_id(kind: str, version: Any) -> int | None:
    """The registry row of a loaded model: the runtime hands over the ModelVersion itself, or its version id."""
    if isinstance(version, ModelVersion):
        return version.pk
    return ModelVersion.objects.filter(kind=kind, version=str(version)).values_list("id", flat=True).first()


def _test_delay() -> None:
    """Slow a job down on purpose, only when the test-only setting is present (worker-kill tests)."""
    delay_ms = getattr(settings, "CARSITE_CLASSIFY_TEST_DELAY_MS", 0)
    if delay_ms:
        time.sleep(int(delay_ms) / 1000)


def _make_of(label: str) -> str:
    """The make in a '2023 Alfa Romeo Giulia' or an 'Alfa Romeo Giulia' label."""
    try:
        return parse_label(label).make
    except LabelError:
        pass
    for make in MULTI_WORD_MAKES:
        if label.lower().startswith(make.lower() + " "):
            return make
    return official_make(label.split(" ")[0])


def make_fallback_from(probabilities: Sequence[tuple[str, float]], limit: int = 3) -> list[dict[str, Any]]:
    """Probabilities summed per make, most likely first: what we can still say when unsure of the model."""
    per_make: dict[str, float] = defaultdict(float)
    for label, probability in probabilities:
        per_make[_make_of(label)] += probability
    ranked = sorted(per_make.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{"make": make, "probability": round(min(1.0, probability), 6)} for make, probability in ranked]


def _gate_verdict_of(label: str) -> str:
    label = label.strip().lower()
    return label if label in GateVerdict.values else GateVerdict.OTHER


def _classify_image(image: Image.Image, decode_ms: float) -> _Outcome:
    gate = _get_active_model(ModelKind.GATE)
    gate_verdict, gate_confidence, gate_version_id, gate_ms = "", None, None, None
    if gate is not None:
        started = time.perf_counter()
        best = gate.predictor.predict([image], top_k=1)[0][0]
        gate_ms = (time.perf_counter() - started) * 1000
        gate_verdict, gate_confidence = _gate_verdict_of(best.label), float(best.probability)
        gate_version_id = _model_version_id(ModelKind.GATE, gate.version)

    predictions: list[dict[str, Any]] = []
    abstained, make_fallback, classifier_version_id, classifier_ms = False, [], None, None
    # Without a gate the photo is assumed to be an exterior (see the module docstring).
    if gate_verdict in ("", GateVerdict.EXTERIOR):
        classifier = _get_active_model(ModelKind.CLASSIFIER)
        if classifier is not None:
            started = time.perf_counter()
            predictor = classifier.predictor
            # Every label, so the make fallback sums the whole distribution, not just the top five.
            ranked = predictor.predict([image], top_k=len(predictor.labels))[0]
            classifier_ms = (time.perf_counter() - started) * 1000
            classifier_version_id = _model_version_id(ModelKind.CLASSIFIER, classifier.version)
            car_model_ids = classifier.car_model_ids or {}
            predictions = [
                {
                    "rank": rank,
                    "label": p.label,
                    "car_model_id": car_model_ids.get(p.label),
                    "probability": min(1.0, max(0.0, float(p.probability))),
                }
                for rank, p in enumerate(ranked[:TOP_K], start=1)
            ]
            threshold = float(getattr(predictor, "abstain_threshold", 0.0) or 0.0)
            abstained = bool(predictions) and predictions[0]["probability"] < threshold
            if abstained:
                make_fallback = make_fallback_from([(p.label, float(p.probability)) for p in ranked])
    return _Outcome(
        gate_verdict=gate_verdict,
        gate_confidence=gate_confidence,
        gate_version_id=gate_version_id,
        classifier_version_id=classifier_version_id,
        predictions=predictions,
        abstained=abstained,
        make_fallback=make_fallback,
        decode_ms=decode_ms,
        gate_ms=gate_ms,
        classifier_ms=classifier_ms,
    )


def _decode(classification: Classification) -> tuple[Image.Image, float]:
    started = time.perf_counter()
    with classification.image.open("rb") as fh:
        data = fh.read()
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, (time.perf_counter() - started) * 1000


def _claim(classification_id: uuid.UUID | str) -> Classification | None:
    """Mark the job running (one more attempt) unless it is already finished; None when there is nothing to do."""
    with transaction.atomic():
        classification = Classification.objects.select_for_update().filter(pk=classification_id).first()
        if classification is None:
            logger.warning("classification %s no longer exists", classification_id)
            return None
        if classification.status in (ClassificationStatus.DONE, ClassificationStatus.FAILED):
            return None
        now = timezone.now()
        if classification.started_at is None:
            classification.queue_wait_ms = max(0.0, (now - classification.created_at).total_seconds() * 1000)
        classification.status = ClassificationStatus.RUNNING
        classification.attempts += 1
        classification.started_at = now
        classification.save(update_fields=["status", "attempts", "started_at", "queue_wait_ms"])
    return classification


def _finish(classification_id: uuid.UUID | str, outcome: _Outcome, started: float) -> Classification | None:
    with transaction.atomic():
        classification = Classification.objects.select_for_update().filter(pk=classification_id).first()
        if classification is None or classification.status == ClassificationStatus.DONE:
            # Another delivery of the same job got here first: keep its result, write nothing.
            return classification
        ClassificationPrediction.objects.filter(classification=classification).delete()
        ClassificationPrediction.objects.bulk_create(
            ClassificationPrediction(
                classification=classification,
                rank=p["rank"],
                label=p["label"],
                car_model_id=p["car_model_id"],
                probability=p["probability"],
            )
            for p in outcome.predictions
        )
        best = outcome.predictions[0] if outcome.predictions else None
        classification.status = ClassificationStatus.DONE
        classification.gate_verdict = outcome.gate_verdict
        classification.gate_confidence = outcome.gate_confidence
        classification.gate_version_id = outcome.gate_version_id
        classification.classifier_version_id = outcome.classifier_version_id
        classification.predicted_car_model_id = best["car_model_id"] if best else None
        classification.confidence = best["probability"] if best else None
        classification.abstained = outcome.abstained
        classification.make_fallback = outcome.make_fallback
        classification.decode_ms = outcome.decode_ms
        classification.gate_ms = outcome.gate_ms
        classification.classifier_ms = outcome.classifier_ms
        classification.total_ms = (time.perf_counter() - started) * 1000
        classification.error = ""
        classification.finished_at = timezone.now()
        classification.save()
    return classification


def _fail(classification_id: uuid.UUID | str, message: str) -> Classification | None:
    with transaction.atomic():
        classification = Classification.objects.select_for_update().filter(pk=classification_id).first()
        if classification is None or classification.status == ClassificationStatus.DONE:
            return classification
        classification.status = ClassificationStatus.FAILED
        classification.error = message[:MAX_ERROR_LENGTH]
        classification.finished_at = timezone.now()
        classification.save(update_fields=["status", "error", "finished_at"])
    return classification


def classification_run(classification_id: uuid.UUID | str) -> Classification | None:
    """Run the gate and, for an exterior, the classifier on one job. Safe to call again for the same job."""
    classification = _claim(classification_id)
    if classification is None:
        return Classification.objects.filter(pk=classification_id).first()
    started = time.perf_counter()
    try:
        _test_delay()
        image, decode_ms = _decode(classification)
        outcome = _classify_image(image, decode_ms)
    except Exception as exc:
        logger.exception("classification %s failed", classification_id)
        return _fail(classification_id, _readable_error(exc))
    return _finish(classification_id, outcome, started)


def _readable_error(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "The uploaded photo could not be found on the server any more."
    if isinstance(exc, OSError | SyntaxError) and "image" in str(exc).lower():
        return f"The stored photo could not be decoded: {exc}"
    return f"The photo could not be classified ({type(exc).__name__}: {exc})."


def classification_fail_stuck(classification_id: uuid.UUID | str, message: str) -> Classification | None:
    """Record a failure that happened outside the service (e.g. the task hit its time limit)."""
    return _fail(classification_id, message)
