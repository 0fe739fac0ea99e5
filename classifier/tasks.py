"""Celery tasks of the classifier app. Thin: they take primary keys and call services."""

# --- model registry tasks (label_views, training) ---
from celery import shared_task

from classifier import worker as _worker  # noqa: F401  (connects the worker start-up hooks that warm up models)


@shared_task(name="classifier.label_views", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def label_views(image_ids: list[int]) -> int:
    """Set the view of these catalog images with the active gate; returns how many were labelled."""
    from classifier.services.photos import car_images_label_views

    return car_images_label_views(image_ids).labelled


@shared_task(name="classifier.train_classifier", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_classifier(options: dict, activate: bool = False) -> int:
    """Train a classifier on the catalog with ``TrainingOptions`` fields; returns the new version's pk."""
    from classifier.services.training import TrainingOptions, classifier_train

    return classifier_train(TrainingOptions(**options), activate=activate).model_version.pk


# --- classification tasks ---
from celery import shared_task  # noqa: E402
from django.db import DatabaseError  # noqa: E402

# Waits before trying a job again whose model cannot be loaded: doubling, at most this long.
MODEL_RETRY_FIRST_SECONDS, MODEL_RETRY_MAX_SECONDS = 10, 600


@shared_task(
    bind=True,
    name="classifier.classify",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # A database hiccup must not leave the job running forever: queue the task again (a new message
    # is sent before this one is acknowledged), and the retry redoes the job (its lease was released).
    autoretry_for=(DatabaseError,),
    retry_backoff=2,
    max_retries=5,
)
def classify(self, classification_id: str) -> None:
    """Run this job; redelivered if the worker dies, a no-op once finished or while a live worker runs it."""
    from celery.exceptions import SoftTimeLimitExceeded

    from classifier.services.execution import ClassificationUnavailable, classification_fail_stuck, classification_run

    try:
        classification_run(classification_id)
    except SoftTimeLimitExceeded:
        classification_fail_stuck(classification_id, "Classification took too long and was stopped.")
    except ClassificationUnavailable as exc:
        # The job is queued again; in-process (no broker) it waits for the next upload or requeue.
        if not self.request.is_eager:
            countdown = min(MODEL_RETRY_MAX_SECONDS, MODEL_RETRY_FIRST_SECONDS * 2**self.request.retries)
            raise self.retry(exc=exc, countdown=countdown, max_retries=None) from exc


@shared_task(name="classifier.requeue_stuck", ignore_result=True)
def requeue_stuck() -> int:
    """Periodic (Celery beat): send a task again for jobs whose message was lost; returns how many."""
    from classifier.services.execution import classifications_requeue_stuck

    return classifications_requeue_stuck()
