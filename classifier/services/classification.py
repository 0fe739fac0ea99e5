"""Classification jobs: accept an uploaded photo, then run the gate and the classifier on it.

The website, the REST API and the Celery task all come through here. An upload is validated and
normalised once (``catalog.imaging.normalise``) in the request; only the upright RGB JPEG is stored
(an upload that already is one is kept as it came, less its metadata).
``classification_run`` is idempotent: a finished job is never redone, a job whose worker died is
redone from scratch, and the result is written in one transaction so a job never has two sets of
predictions.

No active gate: the photo is treated as an exterior (``gate_verdict`` stays blank and the result
page says the gate was unavailable), because refusing every photo would make the site useless while
the gate is being rebuilt. No active classifier: the job finishes with no predictions and the result
page explains how to train one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.db.models import F, Q
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
from classifier.selectors.classifications import classification_status
from classifier.selectors.registry import active_model_version_ids
from classifier.services import classification_postgres

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
    upload: Upload, *, owner_token: str = "", user: Any = None, limits: imaging.ImageLimits | None = None
) -> Classification:
    """Validate one upload, store it and queue its classification. Raises ``ImageRejected``."""
    return classification_create_batch([upload], owner_token=owner_token, user=user, limits=limits)[0]


def classification_create_batch(
    uploads: Sequence[Upload],
    *,
    owner_token: str = "",
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
            image = imaging.normalise(upload.data, limits, perceptual_hash=False, keep_clean_jpeg=True)
            normalised.append((upload, image))
        except imaging.ImageRejected as exc:
            if len(uploads) == 1:
                raise
            name = upload.filename or f"image {index + 1}"
            raise imaging.ImageRejected(f"{name}: {exc}", exc.code) from exc

    owner = user if user is not None and getattr(user, "is_authenticated", False) else None
    created: list[Classification] = []
    stored_files: list[Classification] = []
    # One photo is one INSERT, atomic by itself: a transaction around it would only add two round trips
    # (BEGIN, COMMIT) to every upload. Several photos are stored all or nothing.
    atomically = transaction.atomic() if len(normalised) > 1 else contextlib.nullcontext()
    try:
        with atomically:
            for upload, image in normalised:
                classification = Classification(
                    id=uuid.uuid4(),
                    original_filename=upload.filename,
                    sha256=image.sha256,
                    owner_token=owner_token,
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
            # The upload is committed and stays queued: the periodic requeue sends its task once the broker is back.
            logger.exception("could not send the task of classification %s: it stays queued", classification_id)
            Classification.objects.filter(pk=classification_id, task_unsent_since__isnull=True).update(
                task_unsent_since=timezone.now()
            )

    return enqueue


# --- running jobs ---
#
# A worker's task names one job (the "leader"). It claims that job and, in the same transaction, up to
# ``worker_batch_size() - 1`` other queued jobs (the newest), and runs them through the gate and the classifier as
# one batch: each model over the whole batch in turn, and one round of database writes.
# The members' own task messages arrive later and find their job finished (or running under a live
# lease) and do nothing. The batch's lease (``lease_expires_at``) is renewed while it runs; if the worker
# dies, the lease runs out and the periodic requeue queues those jobs again with a task each (or the
# leader's redelivered message takes back the members left under it): no job is lost, and since a claim
# is one conditional UPDATE, only one delivery takes a job back.


@dataclass(frozen=True)
class _Outcome:
    gate_verdict: str
    gate_confidence: float | None
    gate_version_id: int | None
    classifier_version_id: int | None
    predictions: list[dict[str, Any]]
    abstained: bool
    make_fallback: list[dict[str, Any]]
    gate_ms: float | None
    classifier_ms: float | None


class ClassificationUnavailable(Exception):
    """An active model cannot be loaded: the batch's jobs were put back in the queue, to be tried again later."""


UNAVAILABLE_MESSAGE = "Classification is unavailable at the moment; your photo will be classified once it is back."


def worker_batch_size() -> int:
    """How many queued jobs one task may run together (1 turns batching off)."""
    return max(1, int(settings.CARSITE_CLASSIFY_WORKER_BATCH))


def lease_duration() -> dt.timedelta:
    return dt.timedelta(seconds=float(settings.CARSITE_CLASSIFY_LEASE_SECONDS))


def _claimable(now: dt.datetime) -> Q:
    """Queued, or running under a lease that has expired (its worker died; a job without one predates leases)."""
    expired = Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    return Q(status=ClassificationStatus.QUEUED) | (Q(status=ClassificationStatus.RUNNING) & expired)


def _get_active_model(kind: str, active_ids: dict[str, int]) -> Any:
    from classifier.runtime import get_active_model

    return get_active_model(kind, active_ids)


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


def _classify_images(images: Sequence[Image.Image]) -> list[_Outcome]:
    """Gate every photo, then the classifier on the exteriors (``CARSITE_CLASSIFY_FORWARD_BATCH`` photos per
    forward pass); timings are per photo."""
    count = len(images)
    verdicts: list[tuple[str, float | None]] = [("", None)] * count
    gate_version_id, gate_ms = None, None
    active_ids = active_model_version_ids()  # one query for both kinds, per batch
    gate = _get_active_model(ModelKind.GATE, active_ids)
    batch = None
    if gate is not None:
        started = time.perf_counter()
        batch = gate.predictor.preprocess(images)
        ranked_views = gate.predictor.predict_batch(batch, top_k=1)
        gate_ms = (time.perf_counter() - started) * 1000 / count
        verdicts = [(_gate_verdict_of(ranked[0].label), float(ranked[0].probability)) for ranked in ranked_views]
        gate_version_id = _model_version_id(ModelKind.GATE, gate.version)

    # Without a gate a photo is assumed to be an exterior (see the module docstring).
    exteriors = [i for i, (verdict, _) in enumerate(verdicts) if verdict in ("", GateVerdict.EXTERIOR)]
    ranked_models: dict[int, list[Any]] = {}
    classifier, classifier_ms, classifier_version_id = None, None, None
    if exteriors:
        classifier = _get_active_model(ModelKind.CLASSIFIER, active_ids)
    if classifier is not None:
        predictor = classifier.predictor
        started = time.perf_counter()
        # Every label, so the make fallback sums the whole distribution, not just the top five.
        if batch is not None and predictor.same_preprocessing(gate.predictor):
            # The photos were prepared once for both models (counted in gate_ms).
            ranked_all = predictor.predict_batch(batch[exteriors], top_k=len(predictor.labels))
        else:
            ranked_all = predictor.predict([images[i] for i in exteriors], top_k=len(predictor.labels))
        classifier_ms = (time.perf_counter() - started) * 1000 / len(exteriors)
        classifier_version_id = _model_version_id(ModelKind.CLASSIFIER, classifier.version)
        ranked_models = dict(zip(exteriors, ranked_all, strict=True))

    outcomes = []
    for index, (verdict, confidence) in enumerate(verdicts):
        ranked = ranked_models.get(index)
        if ranked is None:
            outcomes.append(_Outcome(verdict, confidence, gate_version_id, None, [], False, [], gate_ms, None))
            continue
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
        threshold = float(getattr(classifier.predictor, "abstain_threshold", 0.0) or 0.0)
        abstained = bool(predictions) and predictions[0]["probability"] < threshold
        make_fallback = make_fallback_from([(p.label, float(p.probability)) for p in ranked]) if abstained else []
        outcomes.append(
            _Outcome(
                verdict, confidence, gate_version_id, classifier_version_id, predictions, abstained, make_fallback,
                gate_ms, classifier_ms,
            )
        )
    return outcomes


def _decode(classification: Classification) -> tuple[Image.Image, float]:
    started = time.perf_counter()
    with classification.image.open("rb") as fh:
        data = fh.read()
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, (time.perf_counter() - started) * 1000


# Jobs this process has seen finish, done or failed (both final), by id, with when: most task deliveries
# belong to jobs that a batch in this same worker already ran, and answering those from memory saves
# their database round trips (a status query, and the connection health check before it). Remembered
# only once committed; forgotten after a while, so a job set back to queued by hand still runs.
_FINISHED_HERE_LIMIT = 4096
_FINISHED_HERE_SECONDS = 300.0
_finished_here: OrderedDict[str, float] = OrderedDict()
_finished_here_lock = threading.Lock()


def _remember_finished(classification_ids: Sequence[uuid.UUID | str]) -> None:
    now = time.monotonic()
    with _finished_here_lock:
        for classification_id in classification_ids:
            key = str(classification_id)
            _finished_here[key] = now
            _finished_here.move_to_end(key)
        while len(_finished_here) > _FINISHED_HERE_LIMIT:
            _finished_here.popitem(last=False)


def _remember_finished_on_commit(classification_ids: Sequence[uuid.UUID | str]) -> None:
    ids = list(classification_ids)
    transaction.on_commit(lambda: _remember_finished(ids))


def _finished_here_recently(classification_id: uuid.UUID | str) -> bool:
    with _finished_here_lock:
        seen = _finished_here.get(str(classification_id))
    return seen is not None and time.monotonic() - seen < _FINISHED_HERE_SECONDS


def _claim_batch(leader_id: uuid.UUID | str, size: int) -> list[Classification]:
    """Mark the leader's job and up to ``size - 1`` other queued jobs running; [] when there is nothing to do.

    A running job is taken again only once its lease has expired (its worker died), together with the
    members of its batch whose lease expired too; a job a live worker is running is left alone.
    """
    # Most deliveries of a batched job find it finished: answer those without a transaction, and
    # without the database at all when the batch ran here.
    if _finished_here_recently(leader_id):
        return []
    seen = classification_status(leader_id)
    if seen in (ClassificationStatus.DONE, ClassificationStatus.FAILED):
        _remember_finished_on_commit([leader_id])
        return []
    now, batch_leader = timezone.now(), uuid.UUID(str(leader_id))
    if seen == ClassificationStatus.QUEUED and classification_postgres.applies():
        claimed = classification_postgres.claim_queued_batch(batch_leader, size, now, now + lease_duration())
        if claimed:
            return claimed
        # Taken or changed since it was seen: the general path below looks again.
    claim = {
        "status": ClassificationStatus.RUNNING,
        "attempts": F("attempts") + 1,
        "started_at": now,
        "batch_leader": batch_leader,
        "lease_expires_at": now + lease_duration(),
    }
    with transaction.atomic():
        # One conditional UPDATE decides: of two deliveries of the same job, only the first takes it.
        leader_taken = Classification.objects.filter(_claimable(now), pk=leader_id).update(**claim)
        if not leader_taken and Classification.objects.filter(pk=leader_id).exists():
            return []
        if not leader_taken:
            logger.warning("classification %s no longer exists", leader_id)
        others = (
            Classification.objects.select_for_update(skip_locked=True).filter(_claimable(now)).exclude(pk=leader_id)
        )
        # The members of an earlier attempt's batch under this leader that did not finish come too: all of
        # them, even if the batch size has been lowered since.
        member_ids = list(
            others.filter(status=ClassificationStatus.RUNNING, batch_leader=leader_id).values_list("pk", flat=True)
        )
        room = size - leader_taken - len(member_ids)
        if (leader_taken or member_ids) and room > 0:
            # The newest: the oldest jobs' messages are next in the broker's queue, so another worker
            # thread is about to start on them; taking those would leave it only no-op messages.
            queued = others.filter(status=ClassificationStatus.QUEUED).order_by("-created_at")
            member_ids.extend(queued.values_list("pk", flat=True)[:room])
        if member_ids:
            Classification.objects.filter(_claimable(now), pk__in=member_ids).update(**claim)
        claimed = list(
            Classification.objects.filter(pk__in=[batch_leader, *member_ids], batch_leader=batch_leader, started_at=now)
        )
        if not claimed:
            return []
        Classification.objects.filter(pk__in=[job.pk for job in claimed]).update(batch_size=len(claimed))
    claimed.sort(key=lambda job: (job.pk != batch_leader, job.created_at))
    for job in claimed:
        job.batch_size = len(claimed)
        if job.queue_wait_ms is None:  # from upload to the first start that ran it, kept when a job is redone
            job.queue_wait_ms = max(0.0, (now - job.created_at).total_seconds() * 1000)
    return claimed


def _result_values(job: Classification, decode_ms: float, outcome: _Outcome) -> dict[str, Any]:
    """The columns a job's result sets, by attribute name (besides status, total_ms, error, finished_at)."""
    best = outcome.predictions[0] if outcome.predictions else None
    return {
        "gate_verdict": outcome.gate_verdict,
        "gate_confidence": outcome.gate_confidence,
        "gate_version_id": outcome.gate_version_id,
        "classifier_version_id": outcome.classifier_version_id,
        "predicted_car_model_id": best["car_model_id"] if best else None,
        "confidence": best["probability"] if best else None,
        "abstained": outcome.abstained,
        "make_fallback": outcome.make_fallback,
        "queue_wait_ms": job.queue_wait_ms,
        "decode_ms": decode_ms,
        "gate_ms": outcome.gate_ms,
        "classifier_ms": outcome.classifier_ms,
    }


def _prediction_values(job: Classification, outcome: _Outcome) -> list[dict[str, Any]]:
    """The job's prediction rows, by attribute name."""
    return [
        {
            "classification_id": job.pk,
            "rank": p["rank"],
            "label": p["label"],
            "car_model_id": p["car_model_id"],
            "probability": p["probability"],
        }
        for p in outcome.predictions
    ]


def _finish_batch(results: Sequence[tuple[Classification, float, _Outcome]], started: float) -> None:
    """Write every result of a batch in one transaction; a job another delivery already finished is kept."""
    total_ms = (time.perf_counter() - started) * 1000
    finished_at = timezone.now()
    if classification_postgres.applies() and all(job.attempts == 1 for job, _, _ in results):
        # Jobs on their first attempt have no predictions to delete first: one statement writes it all.
        classification_postgres.finish_batch(
            [{"id": job.pk, **_result_values(job, decode_ms, outcome)} for job, decode_ms, outcome in results],
            [row for job, _, outcome in results for row in _prediction_values(job, outcome)],
            total_ms=total_ms,
            finished_at=finished_at,
        )
        return
    with transaction.atomic():
        written: list[Classification] = []
        predictions: list[ClassificationPrediction] = []
        # Primary-key order, so two writers never wait on each other's row locks in a cycle.
        for job, decode_ms, outcome in sorted(results, key=lambda result: result[0].pk):
            # Check and write in one statement: no row is written twice however many deliveries race.
            updated = (
                Classification.objects.filter(pk=job.pk)
                .exclude(status=ClassificationStatus.DONE)
                .update(
                    status=ClassificationStatus.DONE,
                    **_result_values(job, decode_ms, outcome),
                    total_ms=total_ms,
                    error="",
                    finished_at=finished_at,
                )
            )
            if not updated:
                continue
            written.append(job)
            predictions.extend(ClassificationPrediction(**row) for row in _prediction_values(job, outcome))
        redone = [job.pk for job in written if job.attempts > 1]
        if redone:
            # A job redone after its status was reset by hand must not keep a second set of predictions.
            ClassificationPrediction.objects.filter(classification_id__in=redone).delete()
        if predictions:
            ClassificationPrediction.objects.bulk_create(predictions)


def _fail(classification_id: uuid.UUID | str, message: str, detail: str = "") -> Classification | None:
    with transaction.atomic():
        classification = Classification.objects.select_for_update().filter(pk=classification_id).first()
        if classification is None or classification.status == ClassificationStatus.DONE:
            return classification
        classification.status = ClassificationStatus.FAILED
        classification.error = message[:MAX_ERROR_LENGTH]
        classification.error_detail = detail[:MAX_ERROR_LENGTH]
        classification.finished_at = timezone.now()
        classification.save(update_fields=["status", "error", "error_detail", "finished_at"])
        _remember_finished_on_commit([classification.pk])
    return classification


def classification_run(classification_id: uuid.UUID | str) -> int:
    """Run this job, batched with other queued jobs (see above); returns how many jobs this call ran.

    Safe to call again for the same job: a finished job is never redone. Raises ``ClassificationUnavailable``
    when an active model cannot be loaded (the jobs are queued again).
    """
    jobs = _claim_batch(classification_id, worker_batch_size())
    if jobs:
        with _lease_renewed(jobs):
            _run_batch(jobs)
    return len(jobs)


@contextlib.contextmanager
def _lease_renewed(jobs: Sequence[Classification]) -> Any:
    """Renew the batch's lease from a background thread while it runs, so only a dead worker's jobs expire."""
    stop = threading.Event()
    claim = Classification.objects.filter(
        pk__in=[job.pk for job in jobs], status=ClassificationStatus.RUNNING,
        batch_leader=jobs[0].batch_leader, started_at=jobs[0].started_at,
    )

    def renew() -> None:
        from django.db import connection

        try:
            while not stop.wait(lease_duration().total_seconds() / 3):
                try:
                    claim.update(lease_expires_at=timezone.now() + lease_duration())
                except Exception:  # a database hiccup: the next beat tries again
                    logger.exception("could not renew the lease of classification batch %s", jobs[0].batch_leader)
        finally:
            connection.close()  # this thread's own connection

    heartbeat = threading.Thread(target=renew, name="carsite-lease", daemon=True)
    heartbeat.start()
    try:
        yield
    except BaseException:
        stop.set()
        heartbeat.join()
        # The task's retry (a database hiccup) must find the jobs claimable, not wait for the lease to run out.
        with contextlib.suppress(DatabaseError):
            claim.update(lease_expires_at=timezone.now())
        raise
    finally:
        stop.set()
        heartbeat.join()


def _requeue_unavailable(jobs: Sequence[Classification], exc: Exception) -> None:
    """Put the batch back in the queue, telling the visitor only that classification is unavailable."""
    logger.error("classification unavailable, %d jobs queued again: %s", len(jobs), exc, exc_info=exc)
    Classification.objects.filter(pk__in=[job.pk for job in jobs], status=ClassificationStatus.RUNNING).update(
        status=ClassificationStatus.QUEUED,
        batch_leader=None,
        lease_expires_at=None,
        error=UNAVAILABLE_MESSAGE,
        error_detail=str(exc)[:MAX_ERROR_LENGTH],
    )


def _run_batch(jobs: Sequence[Classification]) -> None:
    from classifier.runtime import ModelLoadError

    started = time.perf_counter()
    _test_delay()
    decoded: list[tuple[Classification, Image.Image, float]] = []
    for job in jobs:
        try:
            image, decode_ms = _decode(job)
        except Exception as exc:
            # One unreadable photo fails alone; the rest of the batch goes on.
            logger.exception("classification %s failed", job.pk)
            _fail(job.pk, _readable_error(exc), f"{type(exc).__name__}: {exc}")
            continue
        decoded.append((job, image, decode_ms))
    if not decoded:
        return
    from classifier.runtime import compute_slot

    try:
        with compute_slot():
            outcomes = _classify_images([image for _, image, _ in decoded])
    except ModelLoadError as exc:
        _requeue_unavailable([job for job, _, _ in decoded], exc)
        raise ClassificationUnavailable(str(exc)) from exc
    except Exception as exc:
        logger.exception("classification batch of %s failed", ", ".join(str(job.pk) for job, _, _ in decoded))
        for job, _, _ in decoded:
            _fail(job.pk, _readable_error(exc), f"{type(exc).__name__}: {exc}")
        return
    _finish_batch(
        [(job, decode_ms, outcome) for (job, _, decode_ms), outcome in zip(decoded, outcomes, strict=True)],
        started,
    )
    # Every job written is done now, whichever delivery wrote it.
    _remember_finished_on_commit([job.pk for job, _, _ in decoded])


def _readable_error(exc: BaseException) -> str:
    """What the visitor is told: never a path or the exception's text (those go to ``error_detail``)."""
    if isinstance(exc, FileNotFoundError):
        return "The uploaded photo could not be found on the server any more."
    if isinstance(exc, OSError | SyntaxError) and "image" in str(exc).lower():
        return "The stored photo could not be decoded."
    return "The photo could not be classified."


def classification_fail_stuck(classification_id: uuid.UUID | str, message: str) -> int:
    """Fail a job stopped outside the service (e.g. its task hit the time limit) and the batch it led.

    Returns how many jobs were failed.
    """
    running_under = Classification.objects.filter(
        status=ClassificationStatus.RUNNING, batch_leader=classification_id
    ).values_list("pk", flat=True)
    failed = 0
    for job_id in {uuid.UUID(str(classification_id)), *running_under}:
        job = _fail(job_id, message)
        failed += job is not None and job.status == ClassificationStatus.FAILED
    return failed


def classifications_requeue_stuck(*, queued_for: dt.timedelta | None = None, limit: int = 500) -> int:
    """Send a task again for jobs whose message is evidently gone; returns how many tasks were sent.

    Run every ``CARSITE_CLASSIFY_REQUEUE_EVERY`` seconds by Celery beat. A job whose task could not be
    sent (the broker was down) is sent now. A queued job's message is lost when the broker restarts
    without persistence or is flushed: queued longer than ``queued_for`` gets one more task. A running
    job whose lease expired was left by a dead worker (a live one renews it): it goes back to the queue
    with a task of its own. That is always safe: a job's task is a no-op once it has finished or been
    claimed, so in a backlog longer than ``queued_for`` the extra task costs one lookup.
    """
    now = timezone.now()
    queued_for = queued_for or dt.timedelta(seconds=settings.CARSITE_CLASSIFY_REQUEUE_QUEUED_AFTER)
    with transaction.atomic():
        expired = list(
            Classification.objects.select_for_update(skip_locked=True)
            .filter(_claimable(now), status=ClassificationStatus.RUNNING)
            .order_by("started_at")
            .values_list("pk", flat=True)[:limit]
        )
        if expired:
            Classification.objects.filter(pk__in=expired).update(
                status=ClassificationStatus.QUEUED, batch_leader=None, lease_expires_at=None
            )
        unsent = Q(task_unsent_since__isnull=False) | Q(created_at__lt=now - queued_for)
        queued = list(
            Classification.objects.filter(unsent, status=ClassificationStatus.QUEUED)
            .exclude(pk__in=expired)
            .order_by("created_at")
            .values_list("pk", flat=True)[:limit]
        )
        # Cleared before sending: a send that fails sets it again (see _enqueue_callback).
        Classification.objects.filter(pk__in=queued, task_unsent_since__isnull=False).update(task_unsent_since=None)
        task_ids = [*expired, *queued]
        for task_id in task_ids:
            logger.warning("classification %s looks stuck: queueing its task again", task_id)
            transaction.on_commit(_enqueue_callback(task_id))
    return len(task_ids)
