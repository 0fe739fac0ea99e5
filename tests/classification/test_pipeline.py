"""The classification pipeline with a real zero-shot gate and a real (small) trained classifier."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image

from catalog.models import CarImage, ImageOrigin, ImageView
from classifier.models import Classification, ClassificationPrediction, ClassificationStatus, FeedbackStatus
from classifier.selectors.classifications import classification_get, classification_result
from classifier.services.execution import classification_run
from classifier.services.feedback import FeedbackRefused, feedback_accept, feedback_submit
from classifier.services.intake import Upload, classification_create
from tests.classification.conftest import image_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.serving]

# Photos the zero-shot gate places clearly (checked once by hand: interior 0.89, other 0.99).
INTERIOR_PHOTO = "Acura_NSX_2003_89_17_250_30_6_71_46_174_17_RWD_2_2_2dr_BDf.jpg"
DETAIL_PHOTO = "Acura_NSX_2003_89_17_250_30_6_71_46_174_17_RWD_2_2_2dr_MuR.jpg"


def _classify(data: bytes, django_capture_on_commit_callbacks, name: str = "photo.jpg") -> Classification:
    with django_capture_on_commit_callbacks(execute=True):
        created = classification_create(Upload(data, name), owner_token="s" * 32)
    return classification_get(created.pk)


def _prediction_rows(classification: Classification) -> list[tuple]:
    return list(
        ClassificationPrediction.objects.filter(classification=classification)
        .order_by("rank")
        .values_list("rank", "label", "car_model_id", "probability")
    )


def test_exterior_photo_gets_top5_linked_to_catalog(
    active_gate, active_classifier, acura_catalog, mdx_photo, django_capture_on_commit_callbacks
):
    classification = _classify(mdx_photo, django_capture_on_commit_callbacks)

    assert classification.status == ClassificationStatus.DONE, classification.error
    assert classification.gate_verdict == "exterior"
    assert 0.5 < classification.gate_confidence <= 1
    assert classification.gate_version_id == active_gate.pk
    assert classification.classifier_version_id == active_classifier.pk
    rows = _prediction_rows(classification)
    assert [rank for rank, *_ in rows] == [1, 2, 3, 4, 5]
    probabilities = [p for *_, p in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0 + 1e-6
    catalog_ids = {car_model.pk for car_model in acura_catalog.values()}
    assert {car_model_id for _, _, car_model_id, _ in rows} <= catalog_ids
    assert classification.predicted_car_model_id == rows[0][2]
    assert classification.confidence == pytest.approx(rows[0][3])
    threshold = active_classifier_threshold(active_classifier)
    assert classification.abstained == (rows[0][3] < threshold)
    if classification.abstained:
        assert classification.make_fallback[0]["make"] == "Acura"
    for timing in ("queue_wait_ms", "decode_ms", "gate_ms", "classifier_ms", "total_ms"):
        assert getattr(classification, timing) >= 0
    assert classification.total_ms >= classification.gate_ms + classification.classifier_ms
    assert classification.attempts == 1
    stored = Image.open(classification.image.path)
    assert (stored.format, stored.mode) == ("JPEG", "RGB")


def active_classifier_threshold(model_version) -> float:
    from classifier.runtime import get_active_model

    return get_active_model("classifier").predictor.abstain_threshold


def test_same_photo_twice_gives_the_same_answer(
    active_gate, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    first = _classify(mdx_photo, django_capture_on_commit_callbacks)
    second = _classify(mdx_photo, django_capture_on_commit_callbacks)

    assert first.pk != second.pk
    assert first.image.name != second.image.name
    assert _prediction_rows(first) == _prediction_rows(second)
    assert (first.gate_verdict, first.gate_confidence) == (second.gate_verdict, second.gate_confidence)


@pytest.mark.parametrize(
    ("photo", "verdict", "outcome", "page_text"),
    [
        (INTERIOR_PHOTO, "interior", "interior", "interior shot"),
        (DETAIL_PHOTO, "other", "not_a_car", "look like a car"),
    ],
)
def test_non_exterior_photo_is_not_sent_to_the_classifier(
    client,
    active_gate,
    active_classifier,
    shared_data,
    django_capture_on_commit_callbacks,
    photo,
    verdict,
    outcome,
    page_text,
):
    data = (shared_data / "car-photos" / "images" / photo).read_bytes()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("classifier:upload"), {"image": _file(data)})

    classification = Classification.objects.get()
    assert classification.status == ClassificationStatus.DONE
    assert classification.gate_verdict == verdict
    assert classification.classifier_version_id is None
    assert _prediction_rows(classification) == []
    assert classification_result(classification).outcome == outcome
    assert page_text in client.get(response["Location"]).content.decode()


def test_rerun_of_a_finished_job_changes_nothing(
    active_gate, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    classification = _classify(mdx_photo, django_capture_on_commit_callbacks)
    prediction_ids = list(classification.predictions.values_list("id", flat=True))

    classification_run(classification.pk)

    again = classification_get(classification.pk)
    assert list(again.predictions.values_list("id", flat=True)) == prediction_ids
    assert again.attempts == 1
    assert again.finished_at == classification.finished_at


def test_job_left_running_by_a_dead_worker_is_redone_once(
    active_gate, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    classification = _classify(mdx_photo, django_capture_on_commit_callbacks)
    expected = _prediction_rows(classification)
    # What a worker killed mid-task leaves behind: status running under an expired lease, one attempt, old
    # predictions.
    Classification.objects.filter(pk=classification.pk).update(
        status=ClassificationStatus.RUNNING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    classification_run(classification.pk)

    redone = classification_get(classification.pk)
    assert redone.status == ClassificationStatus.DONE
    assert redone.attempts == 2
    assert _prediction_rows(redone) == expected
    assert ClassificationPrediction.objects.filter(classification=redone).count() == 5


def test_missing_photo_fails_with_a_readable_error(active_gate, mdx_photo):
    classification = classification_create(Upload(mdx_photo, "car.jpg"))
    classification.image.storage.delete(classification.image.name)

    classification_run(classification.pk)

    failed = classification_get(classification.pk)
    assert failed.status == ClassificationStatus.FAILED
    assert "could not be found" in failed.error
    assert failed.finished_at is not None
    assert classification_result(failed).outcome == "failed"


def test_without_classifier_the_page_explains_how_to_train(
    client, active_gate, mdx_photo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("classifier:upload"), {"image": _file(mdx_photo)})
    assert response.status_code == 302

    page = client.get(response["Location"]).content.decode()

    classification = Classification.objects.get()
    assert classification.gate_verdict == "exterior"
    assert classification.classifier_version_id is None
    assert "No classifier is trained yet" in page
    assert "make run" in page and "train_classifier" in page


def test_without_gate_photo_is_treated_as_exterior(
    client, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("classifier:upload"), {"image": _file(mdx_photo)})

    classification = Classification.objects.get()
    assert classification.status == ClassificationStatus.DONE
    assert classification.gate_verdict == ""
    assert classification.predictions.count() == 5
    page = client.get(response["Location"]).content.decode()
    assert "check was not available" in page


def test_result_page_shows_match_specs_and_feedback_is_accepted_into_training(
    client, admin_user, active_gate, active_classifier, acura_catalog, mdx_photo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("classifier:upload"), {"image": _file(mdx_photo)})
    classification = Classification.objects.get()
    page = client.get(response["Location"]).content.decode()
    result = classification_result(classification)
    if result.outcome == "match":
        assert result.car_model.label in page
        assert f"${result.car_model.msrp_usd:,}" in page
        assert "Horsepower" in page
    else:
        assert result.outcome == "abstained"
        assert "not sure" in page
    # Either way the visitor can name the right model.
    mdx = acura_catalog["MDX"]
    response = client.post(
        reverse("classifier:feedback", kwargs={"pk": classification.pk}), {"action": "correct", "car_model": mdx.pk}
    )
    assert response.status_code == 302
    feedback = classification.feedback
    assert (feedback.car_model, feedback.status) == (mdx, FeedbackStatus.PENDING)

    feedback_accept(feedback, reviewer=admin_user)

    feedback.refresh_from_db()
    image = CarImage.objects.get(pk=feedback.training_image_id)
    assert (image.car_model, image.origin, image.view) == (mdx, ImageOrigin.FEEDBACK, ImageView.EXTERIOR)
    assert feedback.status == FeedbackStatus.ACCEPTED and feedback.reviewed_by == admin_user
    # Accepting twice adds nothing more.
    feedback_accept(feedback, reviewer=admin_user)
    assert CarImage.objects.filter(origin=ImageOrigin.FEEDBACK).count() == 1


def test_feedback_from_another_session_is_refused(
    client, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("classifier:upload"), {"image": _file(mdx_photo)})
    classification = Classification.objects.get()
    client.cookies.clear()

    response = client.post(reverse("classifier:feedback", kwargs={"pk": classification.pk}), {"action": "confirm"})

    assert response.status_code == 403
    assert not feedback_exists(classification)


def feedback_exists(classification) -> bool:
    from classifier.models import Feedback

    return Feedback.objects.filter(classification=classification).exists()


def test_feedback_needs_a_finished_job(acura_catalog):
    classification = classification_create(Upload(image_bytes("JPEG"), "car.jpg"))

    with pytest.raises(FeedbackRefused) as refused:
        feedback_submit(classification, car_model=acura_catalog["MDX"], confirm=False)

    assert refused.value.code == "not_finished"
    assert not feedback_exists(classification)


def _file(data: bytes, name: str = "car.jpg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def _open_stored(classification: Classification) -> Image.Image:
    with classification.image.open("rb") as fh:
        return Image.open(io.BytesIO(fh.read()))
