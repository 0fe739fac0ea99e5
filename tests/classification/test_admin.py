"""Staff review classifications and feedback in the admin; accepting feedback adds a training image."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import CarImage, ImageOrigin
from classifier.models import Classification, ClassificationStatus, Feedback, FeedbackStatus
from classifier.services.intake import Upload, classification_create
from tests.classification.conftest import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_job(acura_catalog) -> Classification:
    classification = classification_create(Upload(image_bytes("JPEG", size=(400, 300)), "mine.jpg"))
    Classification.objects.filter(pk=classification.pk).update(
        status=ClassificationStatus.DONE,
        gate_verdict="exterior",
        predicted_car_model=acura_catalog["RDX"],
        confidence=0.7,
    )
    return Classification.objects.get(pk=classification.pk)


def test_classification_list_has_thumbnails_and_filters(admin_client, finished_job):
    response = admin_client.get(
        reverse("admin:classifier_classification_changelist"),
        {"status__exact": "done", "gate_verdict__exact": "exterior"},
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert finished_job.image.url in page
    assert "2023 Acura RDX" in page
    filter_titles = [spec.title for spec in response.context["cl"].filter_specs]
    assert {"status", "gate verdict", "predicted car model"} <= set(filter_titles)
    detail = admin_client.get(reverse("admin:classifier_classification_change", args=[finished_job.pk]))
    assert detail.status_code == 200
    assert 'name="status"' not in detail.content.decode()  # read-only record


def test_accept_action_adds_the_photo_to_the_catalog(admin_client, admin_user, finished_job, acura_catalog):
    feedback = Feedback.objects.create(
        classification=finished_job, is_confirmation=False, car_model=acura_catalog["MDX"]
    )

    response = admin_client.post(
        reverse("admin:classifier_feedback_changelist"),
        {"action": "accept_feedback", "_selected_action": [feedback.pk], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    feedback.refresh_from_db()
    assert feedback.status == FeedbackStatus.ACCEPTED
    assert feedback.reviewed_by == admin_user
    image = CarImage.objects.get(origin=ImageOrigin.FEEDBACK)
    assert (image.car_model, image.view, feedback.training_image) == (acura_catalog["MDX"], "exterior", image)


def test_reject_action_adds_nothing(admin_client, finished_job, acura_catalog):
    feedback = Feedback.objects.create(
        classification=finished_job, is_confirmation=True, car_model=acura_catalog["RDX"]
    )

    admin_client.post(
        reverse("admin:classifier_feedback_changelist"),
        {"action": "reject_feedback", "_selected_action": [feedback.pk]},
    )

    feedback.refresh_from_db()
    assert feedback.status == FeedbackStatus.REJECTED
    assert not CarImage.objects.filter(origin=ImageOrigin.FEEDBACK).exists()


def _second_job(acura_catalog) -> Classification:
    classification = classification_create(Upload(image_bytes("JPEG", size=(400, 300), color=(20, 90, 200)), "b.jpg"))
    Classification.objects.filter(pk=classification.pk).update(
        status=ClassificationStatus.DONE, gate_verdict="exterior", predicted_car_model=acura_catalog["MDX"]
    )
    return Classification.objects.get(pk=classification.pk)


def test_accept_action_asks_first_with_the_count_of_photos(admin_client, finished_job, acura_catalog):
    mdx = acura_catalog["MDX"]
    pending = Feedback.objects.create(classification=finished_job, is_confirmation=False, car_model=mdx)
    rejected = Feedback.objects.create(
        classification=_second_job(acura_catalog),
        is_confirmation=True,
        car_model=mdx,
        status=FeedbackStatus.REJECTED,
    )
    url = reverse("admin:classifier_feedback_changelist")
    selected = {"action": "accept_feedback", "_selected_action": [pending.pk, rejected.pk]}

    confirmation = admin_client.post(url, selected)

    assert confirmation.status_code == 200
    assert [t.name for t in confirmation.templates][0] == "admin/classifier/feedback/accept_confirmation.html"
    page = confirmation.content.decode()
    assert "Accepting adds <strong>2 photos</strong>" in page
    assert 'name="post" value="yes"' in page
    assert not CarImage.objects.exists()
    assert set(Feedback.objects.values_list("status", flat=True)) == {FeedbackStatus.PENDING, FeedbackStatus.REJECTED}

    admin_client.post(url, {**selected, "post": "yes"})

    assert set(Feedback.objects.values_list("status", flat=True)) == {FeedbackStatus.ACCEPTED}
    # Plain single-colour photos: the catalog may keep one image for both (near-duplicates), linked from each.
    assert Feedback.objects.filter(training_image__origin=ImageOrigin.FEEDBACK).count() == 2


def test_staff_who_may_only_view_feedback_cannot_accept_or_reject_it(
    client, django_user_model, finished_job, acura_catalog
):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_feedback"))
    client.force_login(viewer)
    mdx = acura_catalog["MDX"]
    feedback = Feedback.objects.create(classification=finished_job, is_confirmation=False, car_model=mdx)

    for action in ("accept_feedback", "reject_feedback"):
        client.post(
            reverse("admin:classifier_feedback_changelist"),
            {"action": action, "_selected_action": [feedback.pk], "post": "yes"},
        )

    feedback.refresh_from_db()
    assert feedback.status == FeedbackStatus.PENDING
    assert not CarImage.objects.exists()
