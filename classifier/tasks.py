"""Celery tasks of the classifier app. Thin: they take primary keys and call services."""

# --- model registry tasks (label_views, training) ---

# --- classification tasks ---
from celery import shared_task  # noqa: E402


@shared_task(name="classifier.classify", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def classify(classification_id: str) -> None:
    """Run one classification job; redelivered if the worker dies, a no-op once the job is finished."""
    from celery.exceptions import SoftTimeLimitExceeded

    from classifier.services.classification import classification_fail_stuck, classification_run

    try:
        classification_run(classification_id)
    except SoftTimeLimitExceeded:
        classification_fail_stuck(classification_id, "Classification took too long and was stopped.")
