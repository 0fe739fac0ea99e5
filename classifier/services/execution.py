"""Classification execution: a worker's task claims jobs, runs the gate and the classifier, writes each result.

A task claims its own job and the oldest other queued ones, up to ``CARSITE_CLASSIFY_CLAIM_BATCH``: under a
backlog one claim then serves several jobs, and the tasks of the others find them taken and only read (a
backlog drains about half as fast again, by bench/classify_benchmark.py). Each photo still goes through the
models on its own and its result is written as soon as it is there. Every step goes through the ORM and
works the same on PostgreSQL and SQLite:

- **claim**: the rows are locked where the database can lock rows (``select_for_update``, skipping rows
  another delivery is claiming right now), and one conditional UPDATE marks them running under one lease.
  Of two deliveries of the same job only one takes it; a finished job, or one running under a live lease, is
  left alone. The claim's ``started_at`` identifies it afterwards.
- **run**: the photo goes through the active gate, then (an exterior) through the active classifier; models
  come from ``classifier.runtime``, which picks up a newly activated version without a restart.
- **write**: the result and its predictions in one transaction, by an UPDATE conditional on the job still
  running under this claim: a job another delivery finished meanwhile keeps that result, so a job never has
  two sets of predictions.
- **lease**: renewed from a background thread while the claim runs; a running job whose lease expired was
  left by a dead worker, and the periodic requeue (``classifications_requeue_stuck``) queues it again.

No active gate: the photo is treated as an exterior (``gate_verdict`` stays blank and the result page says
the gate was unavailable), because refusing every photo would make the site useless while the gate is
being rebuilt. No active classifier: the job finishes with no predictions and the result page explains
how to train one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from PIL import Image

from catalog.naming import MULTI_WORD_MAKES, LabelError, official_make, parse_label
from classifier.models import (
    Classification,
    ClassificationPrediction,
    ClassificationStatus,
    GateVerdict,
    ModelKind,
    ModelVersion,
)
from classifier.selectors.registry import active_model_version_ids
from classifier.services.intake import classification_enqueue_on_commit

logger = logging.getLogger(__name__)

TOP_K = 5
MAX_ERROR_LENGTH = 1000
UNAVAILABLE_MESSAGE = "Classification is unavailable at the moment; your photo will be classified once it is back."


class ClassificationUnavailable(Exception):
    """An active model cannot be loaded: the job was put back in the queue, to be tried again later."""


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


def lease_duration() -> dt.timedelta:
    return dt.timedelta(seconds=float(settings.CARSITE_CLASSIFY_LEASE_SECONDS))


def _locked(queryset: QuerySet[Classification]) -> QuerySet[Classification]:
    """Lock the rows read, skipping those another transaction holds, on a database that can.

    SQLite has no row locks and ignores this (its writes are serialised); a database with row locks but no
    SKIP LOCKED waits for them. Either way the conditional UPDATE after it decides.
    """
    return queryset.select_for_update(skip_locked=connection.features.has_select_for_update_skip_locked)


def _claimable(now: dt.datetime) -> Q:
    """Queued, or running under a lease that has expired (its worker died; a job without one predates leases)."""
    expired = Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    return Q(status=ClassificationStatus.QUEUED) | (Q(status=ClassificationStatus.RUNNING) & expired)


# --- claim ---


def _claim(classification_id: uuid.UUID | str) -> tuple[list[Classification], dt.datetime]:
    """Mark this job (when it can be claimed) and the oldest other queued jobs running under one lease.

    Up to ``CARSITE_CLASSIFY_CLAIM_BATCH`` jobs in all, so a backlog costs one claim per batch instead of per
    job (each result is still written on its own); the tasks of the other jobs find them taken and only
    read. Empty when there is nothing to do. The claim's ``started_at`` is its identity: lease renewal and
    the write touch only rows still running under this claim (a later claim of a job needs its lease to
    have expired).
    """
    now = timezone.now()
    with transaction.atomic():
        jobs = list(_locked(Classification.objects.filter(_claimable(now), pk=classification_id)))
        wanted = max(1, int(settings.CARSITE_CLASSIFY_CLAIM_BATCH)) - len(jobs)
        if wanted > 0:
            queued = Classification.objects.filter(status=ClassificationStatus.QUEUED).exclude(pk=classification_id)
            jobs += list(_locked(queued.order_by("created_at"))[:wanted])
        if not jobs:
            return [], now
        claimed = {
            "status": ClassificationStatus.RUNNING,
            "attempts": F("attempts") + 1,
            "started_at": now,
            "lease_expires_at": now + lease_duration(),
        }
        # Conditional: on a database without row locks a job another claim took meanwhile is left alone.
        Classification.objects.filter(_claimable(now), pk__in=[job.pk for job in jobs]).update(**claimed)
        jobs = list(_this_claim([job.pk for job in jobs], now).order_by("created_at"))
    return jobs, now


def _this_claim(ids: Sequence[uuid.UUID], started_at: dt.datetime) -> QuerySet[Classification]:
    """The jobs of ``ids`` still running under the claim made at ``started_at``."""
    return Classification.objects.filter(pk__in=ids, status=ClassificationStatus.RUNNING, started_at=started_at)


@contextlib.contextmanager
def _lease_renewed(ids: Sequence[uuid.UUID], started_at: dt.datetime) -> Iterator[None]:
    """Renew the lease of the claim made at ``started_at`` from a background thread while it runs, so only a
    dead worker's jobs expire."""
    claim = _this_claim(ids, started_at)
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(lease_duration().total_seconds() / 3):
                try:
                    claim.update(lease_expires_at=timezone.now() + lease_duration())
                except Exception:  # a database hiccup: the next beat tries again
                    logger.exception("could not renew the lease of classifications %s", [str(pk) for pk in ids])
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


# --- run ---


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


def _classify_image(image: Image.Image, active_ids: dict[str, int]) -> _Outcome:
    """Gate the photo, then the classifier when it is an exterior; timings in ms."""
    gate = _get_active_model(ModelKind.GATE, active_ids)
    verdict, gate_confidence, gate_version_id, gate_ms, batch = "", None, None, None, None
    if gate is not None:
        started = time.perf_counter()
        batch = gate.predictor.preprocess([image])
        ranked_view = gate.predictor.predict_batch(batch, top_k=1)[0][0]
        gate_ms = (time.perf_counter() - started) * 1000
        verdict, gate_confidence = _gate_verdict_of(ranked_view.label), float(ranked_view.probability)
        gate_version_id = _model_version_id(ModelKind.GATE, gate.version)
    # Without a gate a photo is assumed to be an exterior (see the module docstring).
    classifier = None
    if verdict in ("", GateVerdict.EXTERIOR):
        classifier = _get_active_model(ModelKind.CLASSIFIER, active_ids)
    if classifier is None:
        return _Outcome(verdict, gate_confidence, gate_version_id, None, [], False, [], gate_ms, None)

    predictor = classifier.predictor
    started = time.perf_counter()
    # Every label, so the make fallback sums the whole distribution, not just the top five.
    if batch is not None and predictor.same_preprocessing(gate.predictor):
        ranked = predictor.predict_batch(batch, top_k=len(predictor.labels))[0]  # prepared once, in gate_ms
    else:
        ranked = predictor.predict([image], top_k=len(predictor.labels))[0]
    classifier_ms = (time.perf_counter() - started) * 1000
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
    make_fallback = make_fallback_from([(p.label, float(p.probability)) for p in ranked]) if abstained else []
    return _Outcome(
        verdict,
        gate_confidence,
        gate_version_id,
        _model_version_id(ModelKind.CLASSIFIER, classifier.version),
        predictions,
        abstained,
        make_fallback,
        gate_ms,
        classifier_ms,
    )


def _decode(classification: Classification) -> tuple[Image.Image, float]:
    started = time.perf_counter()
    with classification.image.open("rb") as fh:
        data = fh.read()
    image: Image.Image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, (time.perf_counter() - started) * 1000


def _readable_error(exc: BaseException) -> str:
    """What the visitor is told: never a path or the exception's text (those go to ``error_detail``)."""
    if isinstance(exc, FileNotFoundError):
        return "The uploaded photo could not be found on the server any more."
    if isinstance(exc, OSError | SyntaxError) and "image" in str(exc).lower():
        return "The stored photo could not be decoded."
    return "The photo could not be classified."


def _run(job: Classification, claimed_at: dt.datetime, active_ids: dict[str, int]) -> None:
    """Classify the job's photo and write its result; a photo that cannot be classified fails its job alone."""
    from classifier.runtime import ModelLoadError, compute_slot

    started = time.perf_counter()
    _test_delay()
    try:
        image, decode_ms = _decode(job)
        with compute_slot():
            outcome = _classify_image(image, active_ids)
    except (DatabaseError, ModelLoadError):
        raise  # not this photo's fault: the task's retry runs it again (see classification_run)
    except Exception as exc:
        logger.exception("classification %s failed", job.pk)
        _failed(_this_claim([job.pk], claimed_at), _readable_error(exc), f"{type(exc).__name__}: {exc}")
        return
    _finish(job, claimed_at, decode_ms, outcome, total_ms=(time.perf_counter() - started) * 1000)


# --- write ---


def _finish(
    job: Classification, claimed_at: dt.datetime, decode_ms: float, outcome: _Outcome, *, total_ms: float
) -> None:
    """Write the result and its predictions in one transaction, while the job still runs under this claim: a job
    another delivery took over (its lease had expired) or finished meanwhile keeps that result."""
    best = outcome.predictions[0] if outcome.predictions else None
    queue_wait_ms = job.queue_wait_ms  # from upload to the start of the first run that finished it
    if queue_wait_ms is None:
        queue_wait_ms = max(0.0, (claimed_at - job.created_at).total_seconds() * 1000)
    with transaction.atomic():
        # Check and write in one statement: no job is written twice however many deliveries race.
        written = _this_claim([job.pk], claimed_at).update(
            status=ClassificationStatus.DONE,
            gate_verdict=outcome.gate_verdict,
            gate_confidence=outcome.gate_confidence,
            gate_version_id=outcome.gate_version_id,
            classifier_version_id=outcome.classifier_version_id,
            predicted_car_model_id=best["car_model_id"] if best else None,
            confidence=best["probability"] if best else None,
            abstained=outcome.abstained,
            queue_wait_ms=queue_wait_ms,
            make_fallback=outcome.make_fallback,
            decode_ms=decode_ms,
            gate_ms=outcome.gate_ms,
            classifier_ms=outcome.classifier_ms,
            total_ms=total_ms,
            error="",
            finished_at=timezone.now(),
        )
        if not written:
            return
        if job.attempts > 1:
            # A job redone (its worker died, or its status was reset by hand) must not keep a second set.
            ClassificationPrediction.objects.filter(classification_id=job.pk).delete()
        ClassificationPrediction.objects.bulk_create(
            ClassificationPrediction(classification_id=job.pk, **prediction) for prediction in outcome.predictions
        )


def _failed(jobs: QuerySet[Classification], message: str, detail: str = "") -> int:
    """Mark these jobs failed unless they are done; returns how many were failed."""
    return jobs.exclude(status=ClassificationStatus.DONE).update(
        status=ClassificationStatus.FAILED,
        error=message[:MAX_ERROR_LENGTH],
        error_detail=detail[:MAX_ERROR_LENGTH],
        finished_at=timezone.now(),
    )


def _requeue_unavailable(claim: QuerySet[Classification], exc: Exception) -> None:
    """Put the claim's jobs back in the queue, telling the visitor only that classification is unavailable."""
    logger.error("classification unavailable, jobs queued again: %s", exc, exc_info=exc)
    claim.update(
        status=ClassificationStatus.QUEUED,
        lease_expires_at=None,
        error=UNAVAILABLE_MESSAGE,
        error_detail=str(exc)[:MAX_ERROR_LENGTH],
    )


# --- entry points: the task, and the periodic requeue ---


def classification_run(classification_id: uuid.UUID | str) -> int:
    """Run this job, and the oldest other queued jobs with it (see ``_claim``); returns how many this call ran.

    Safe to call again for the same job: a finished job is never redone, and a job a live worker is
    running is left alone. Each photo goes through the models on its own, so its answer does not depend
    on its batch-mates. Raises ``ClassificationUnavailable`` when an active model cannot be loaded (the
    jobs are queued again).
    """
    from classifier.runtime import ModelLoadError

    jobs, claimed_at = _claim(classification_id)
    if not jobs:
        return 0
    ids = [job.pk for job in jobs]
    with _lease_renewed(ids, claimed_at):
        active_ids = active_model_version_ids()  # one query for both kinds, once per batch
        try:
            for job in jobs:
                _run(job, claimed_at, active_ids)  # each answer is written as soon as it is there
        except ModelLoadError as exc:
            _requeue_unavailable(_this_claim(ids, claimed_at), exc)
            raise ClassificationUnavailable(str(exc)) from exc
    return len(jobs)


def classification_fail_stuck(classification_id: uuid.UUID | str, message: str) -> int:
    """Fail a job stopped outside the service (e.g. its task hit the time limit); returns how many were failed."""
    return _failed(Classification.objects.filter(pk=classification_id), message)


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
            _locked(Classification.objects.filter(_claimable(now), status=ClassificationStatus.RUNNING))
            .order_by("started_at")
            .values_list("pk", flat=True)[:limit]
        )
        if expired:
            Classification.objects.filter(_claimable(now), pk__in=expired).update(
                status=ClassificationStatus.QUEUED, lease_expires_at=None
            )
        unsent = Q(task_unsent_since__isnull=False) | Q(created_at__lt=now - queued_for)
        queued = list(
            Classification.objects.filter(unsent, status=ClassificationStatus.QUEUED)
            .exclude(pk__in=expired)
            .order_by("created_at")
            .values_list("pk", flat=True)[:limit]
        )
        # Cleared before sending: a send that fails sets it again (see classification_enqueue_on_commit).
        Classification.objects.filter(pk__in=queued, task_unsent_since__isnull=False).update(task_unsent_since=None)
        task_ids = [*expired, *queued]
        for task_id in task_ids:
            logger.warning("classification %s looks stuck: queueing its task again", task_id)
            classification_enqueue_on_commit(task_id)
    return len(task_ids)
