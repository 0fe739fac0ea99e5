"""Visitor feedback on a classification, and the staff review that turns it into training data."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from catalog import imaging
from catalog.models import CarModel, ImageOrigin, ImageView
from catalog.services import car_image_add
from classifier.models import Classification, ClassificationStatus, Feedback, FeedbackStatus
from classifier.selectors.classifications import OUTCOME_ABSTAINED, OUTCOME_MATCH, classification_outcome


class FeedbackRefused(ValidationError):
    """The job does not take feedback in its state (not finished, showed no car models, already reviewed)."""


def feedback_submit(classification: Classification, *, car_model: CarModel | None, confirm: bool) -> Feedback:
    """Record that the best match was right (``confirm``) or which catalog model the photo really shows.

    Only a finished job that showed car models (a match, or the candidates it was not sure between) takes
    feedback. A visitor may change their mind until staff have reviewed the feedback.
    """
    if classification.status != ClassificationStatus.DONE:
        raise FeedbackRefused("Feedback can be given once the photo has been classified.", code="not_finished")
    if classification_outcome(classification) not in (OUTCOME_MATCH, OUTCOME_ABSTAINED):
        raise FeedbackRefused(
            "This photo was not matched to any car model, so there is nothing to confirm or correct.",
            code="no_predictions",
        )
    if confirm:
        if classification.predicted_car_model_id is None:
            raise ValidationError("There is no match to confirm; pick the right model instead.")
        car_model = classification.predicted_car_model
    if car_model is None:
        raise ValidationError("Pick the car model the photo shows.")
    with transaction.atomic():
        feedback = Feedback.objects.select_for_update().filter(classification=classification).first()
        if feedback is not None and feedback.status != FeedbackStatus.PENDING:
            raise FeedbackRefused("This feedback has already been reviewed; thank you.", code="already_reviewed")
        if feedback is None:
            feedback = Feedback(classification=classification)
        feedback.car_model = car_model
        feedback.is_confirmation = bool(confirm) or car_model.pk == classification.predicted_car_model_id
        feedback.full_clean()
        feedback.save()
    return feedback


def feedback_accept(feedback: Feedback, *, reviewer: Any) -> Feedback:
    """Accept the feedback: the photo becomes an exterior training image of the named car model."""
    with transaction.atomic():
        feedback = (
            Feedback.objects.select_for_update().select_related("classification", "car_model").get(pk=feedback.pk)
        )
        if feedback.status == FeedbackStatus.ACCEPTED:
            return feedback
        with feedback.classification.image.open("rb") as fh:
            data = fh.read()
        try:
            added = car_image_add(feedback.car_model, data=data, origin=ImageOrigin.FEEDBACK, view=ImageView.EXTERIOR)
        except imaging.ImageRejected as exc:
            raise ValidationError(f"The photo cannot be used for training: {exc}") from exc
        feedback.training_image = added.image or added.duplicate_of
        feedback.status = FeedbackStatus.ACCEPTED
        feedback.reviewed_by = reviewer if getattr(reviewer, "is_authenticated", False) else None
        feedback.reviewed_at = timezone.now()
        feedback.save()
    return feedback


def feedback_reject(feedback: Feedback, *, reviewer: Any) -> Feedback:
    with transaction.atomic():
        feedback = Feedback.objects.select_for_update().get(pk=feedback.pk)
        if feedback.status == FeedbackStatus.ACCEPTED:
            raise ValidationError("Accepted feedback has already been added to the training images.")
        feedback.status = FeedbackStatus.REJECTED
        feedback.reviewed_by = reviewer if getattr(reviewer, "is_authenticated", False) else None
        feedback.reviewed_at = timezone.now()
        feedback.save()
    return feedback
