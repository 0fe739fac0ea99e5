"""Feedback is taken only on finished jobs that showed car models, and is throttled per client."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from classifier.models import (
    Classification,
    ClassificationPrediction,
    ClassificationStatus,
    Feedback,
    FeedbackStatus,
    ModelKind,
    ModelVersion,
)
from tests.classification.conftest import upload_on_page as _upload

pytestmark = pytest.mark.django_db


def _finish(classification: Classification, car_model, *, gate_verdict: str = "exterior") -> Classification:
    """Mark the job done as the worker would: matched to ``car_model`` unless the gate turned it away."""
    classifier = ModelVersion.objects.get_or_create(
        kind=ModelKind.CLASSIFIER, version="tests", defaults={"architecture": "tests", "bundle_path": "/none"}
    )[0]
    matched = gate_verdict == "exterior"
    Classification.objects.filter(pk=classification.pk).update(
        status=ClassificationStatus.DONE,
        gate_verdict=gate_verdict,
        classifier_version=classifier if matched else None,
        predicted_car_model=car_model if matched else None,
        confidence=0.9 if matched else None,
    )
    if matched:
        ClassificationPrediction.objects.create(
            classification=classification, rank=1, label=car_model.label, car_model=car_model, probability=0.9
        )
    return Classification.objects.get(pk=classification.pk)


def _send(client: Client, classification: Classification, car_model):
    url = reverse("classifier:feedback", kwargs={"pk": classification.pk})
    return client.post(url, {"action": "correct", "car_model": car_model.pk})


def _page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.mark.parametrize("gate_verdict", ["interior", "other"])
def test_a_job_that_showed_no_car_models_takes_no_feedback(client, acura_catalog, gate_verdict):
    classification = _finish(_upload(client), acura_catalog["MDX"], gate_verdict=gate_verdict)

    response = _send(client, classification, acura_catalog["MDX"])

    assert response.status_code == 409
    assert _page_messages(response) == [
        "This photo was not matched to any car model, so there is nothing to confirm or correct."
    ]
    assert not Feedback.objects.exists()


def test_an_unfinished_job_takes_no_feedback(client, acura_catalog):
    classification = _upload(client)  # still queued

    response = _send(client, classification, acura_catalog["MDX"])

    assert response.status_code == 409
    assert _page_messages(response) == ["Feedback can be given once the photo has been classified."]
    assert not Feedback.objects.exists()


def test_reviewed_feedback_cannot_be_changed(client, acura_catalog):
    classification = _finish(_upload(client), acura_catalog["RDX"])
    assert _send(client, classification, acura_catalog["MDX"]).status_code == 302
    Feedback.objects.update(status=FeedbackStatus.REJECTED)

    response = _send(client, classification, acura_catalog["TLX"])

    assert response.status_code == 409
    assert Feedback.objects.get().car_model == acura_catalog["MDX"]


def test_a_matched_job_takes_feedback(client, acura_catalog):
    classification = _finish(_upload(client), acura_catalog["RDX"])

    response = _send(client, classification, acura_catalog["MDX"])

    assert response.status_code == 302
    assert Feedback.objects.get().car_model == acura_catalog["MDX"]


def test_feedback_is_throttled_per_client(settings, acura_catalog):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "feedback": "2/hour"},
    }
    visitor = Client(REMOTE_ADDR="203.0.113.7")
    jobs = [_finish(_upload(visitor, color=(10 * n, 30, 30)), acura_catalog["RDX"]) for n in range(3)]

    statuses = [_send(visitor, job, acura_catalog["MDX"]).status_code for job in jobs]

    assert statuses == [302, 302, 429]
    throttled = _send(visitor, jobs[2], acura_catalog["MDX"])
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert _page_messages(throttled)[0].startswith("Too many answers from you in a short time")
    assert Feedback.objects.count() == 2
    # Another address has its own allowance.
    neighbour = Client(REMOTE_ADDR="203.0.113.8")
    job = _finish(_upload(neighbour, color=(90, 90, 90)), acura_catalog["RDX"])
    assert _send(neighbour, job, acura_catalog["MDX"]).status_code == 302
