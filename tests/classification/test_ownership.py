"""Uploads belong to the visitor's session through a random owner token: no session key is stored or shown."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse

from classifier.models import Classification
from tests.classification.conftest import image_bytes
from tests.classification.conftest import upload_on_page as _upload

pytestmark = pytest.mark.django_db


def _recent_ids(client: Client) -> list[str]:
    return [str(item.pk) for item in client.get(reverse("classifier:upload")).context["recent"]]


def test_no_session_key_is_stored_or_shown_to_staff(client, django_user_model):
    classification = _upload(client)
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_classification"))
    staff = Client()
    staff.force_login(viewer)

    detail = staff.get(reverse("admin:classifier_classification_change", args=[classification.pk]))
    listing = staff.get(reverse("admin:classifier_classification_changelist"))

    assert detail.status_code == 200 and listing.status_code == 200
    for page in (detail.content.decode(), listing.content.decode()):
        assert session_key not in page
        assert classification.owner_token not in page
    stored = Classification.objects.filter(pk=classification.pk).values().get()
    assert session_key not in {str(value) for value in stored.values()}
    assert len(classification.owner_token) == 32


def test_the_old_session_key_column_is_gone():
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, "classifier_classification")}
    assert "session_key" not in columns
    assert "owner_token" in columns


def test_visitors_see_and_answer_only_their_own_uploads(client):
    other = Client()
    mine, theirs = _upload(client), _upload(other, color=(30, 30, 200))

    assert _recent_ids(client) == [str(mine.pk)]
    assert _recent_ids(other) == [str(theirs.pk)]
    assert client.get(reverse("classifier:result", args=[mine.pk])).context["can_give_feedback"] is True
    assert client.get(reverse("classifier:result", args=[theirs.pk])).context["can_give_feedback"] is False
    assert _recent_ids(Client()) == []


def test_uploads_stay_yours_after_signing_in(client, django_user_model):
    mine = _upload(client)
    before = client.cookies[settings.SESSION_COOKIE_NAME].value

    client.force_login(django_user_model.objects.create_user("visitor", password="pw-visitor-123"))

    assert client.cookies[settings.SESSION_COOKIE_NAME].value != before  # Django renewed the session key
    assert _recent_ids(client) == [str(mine.pk)]


def test_api_uploads_from_the_same_browser_are_the_visitors_too(client):
    mine = _upload(client)
    photo = SimpleUploadedFile("api.jpg", image_bytes("JPEG", size=(400, 300), color=(30, 200, 30)), "image/jpeg")

    response = client.post("/api/v1/classifications/", {"image": photo})

    assert response.status_code == 202
    assert _recent_ids(client) == [response.json()["id"], str(mine.pk)]
    photo = SimpleUploadedFile("api.jpg", image_bytes("JPEG", size=(400, 300), color=(90, 90, 90)), "image/jpeg")
    anonymous = Client().post("/api/v1/classifications/", {"image": photo})
    assert Classification.objects.get(pk=anonymous.json()["id"]).owner_token == ""
