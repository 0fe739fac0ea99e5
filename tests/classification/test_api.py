"""The classification REST API: 202 + Location, batches and their limit, results, throttling, schema."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.models import Classification, ClassificationStatus
from tests.classification.conftest import image_bytes, media_files

pytestmark = pytest.mark.django_db
URL = "/api/v1/classifications/"


def _jpeg(name: str = "car.jpg", colour=(200, 30, 30)) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes("JPEG", color=colour), content_type="image/jpeg")


def test_post_one_photo_answers_202_with_location(client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(URL, {"image": _jpeg()})

    assert response.status_code == 202
    body = response.json()
    classification = Classification.objects.get()
    assert body["id"] == str(classification.pk)
    assert body["status"] == ClassificationStatus.QUEUED
    assert response["Location"].endswith(f"{URL}{classification.pk}/")
    assert body["result"] is None
    assert len(callbacks) == 1  # queued only once the upload has committed


def test_the_upload_answer_is_what_the_serializer_says_of_the_stored_job(client, django_capture_on_commit_callbacks):
    from rest_framework.test import APIRequestFactory

    from classifier.serializers import ClassificationSerializer

    with django_capture_on_commit_callbacks(execute=False):
        single = client.post(URL, {"image": _jpeg("one.jpg")}).json()
        batch = client.post(URL, {"image": [_jpeg(f"{i}.jpg", (60 * i, 10, 10)) for i in range(2)]}).json()

    request = APIRequestFactory().get("/")  # the same host as the test client's: testserver
    for answered in (single, *batch["results"]):
        stored = Classification.objects.get(pk=answered["id"])
        assert answered == ClassificationSerializer(stored, context={"request": request}).data


def test_batch_returns_every_job_in_order(client):
    response = client.post(URL, {"image": [_jpeg(f"{i}.jpg", (40 * i, 10, 10)) for i in range(3)]})

    assert response.status_code == 202
    results = response.json()["results"]
    assert [job["original_filename"] for job in results] == ["0.jpg", "1.jpg", "2.jpg"]
    assert response["Location"] == results[0]["url"]
    assert Classification.objects.count() == 3


def test_batch_over_the_limit_is_refused_whole(client, settings, _isolated_media):
    settings.CARSITE_CLASSIFY_BATCH_LIMIT = 2

    response = client.post(URL, {"image": [_jpeg(f"{i}.jpg") for i in range(3)]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_images"
    assert "at most 2" in response.json()["error"]["message"]
    assert Classification.objects.count() == 0
    assert media_files(_isolated_media) == []


def test_polling_a_queued_job_costs_one_query(client, django_capture_on_commit_callbacks, django_assert_num_queries):
    with django_capture_on_commit_callbacks(execute=False):
        location = client.post(URL, {"image": _jpeg()})["Location"]

    with django_assert_num_queries(1):
        job = client.get(location).json()

    assert (job["status"], job["result"]) == ("queued", None)


def test_get_shows_status_then_result_with_car_model_and_specs(
    client, active_gate, active_classifier, mdx_photo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, {"image": SimpleUploadedFile("mdx.jpg", mdx_photo, content_type="image/jpeg")})
    assert response.status_code == 202

    job = client.get(response["Location"]).json()

    assert job["status"] == "done"
    result = job["result"]
    assert result["gate_verdict"] == "exterior"
    assert len(result["predictions"]) == 5
    assert result["classifier_version"] == active_classifier.version
    assert job["timings"]["total_ms"] > 0
    if result["outcome"] == "match":
        summary = result["car_model"]
        assert summary["model"] in result["predictions"][0]["label"]
        assert summary["msrp_usd"] > 0
        assert any(row["name"] == "horsepower" for row in summary["spec_rows"])
    else:
        assert result["outcome"] == "abstained"
        assert result["likely_makes"][0]["make"] == "Acura"


def test_get_unknown_job_is_404_in_the_error_shape(client):
    response = client.get(f"{URL}00000000-0000-0000-0000-000000000000/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_listing_is_not_offered(client):
    assert client.get(URL).status_code == 405


def test_anonymous_uploads_are_throttled_per_client(settings, django_user_model):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"classify_anon": "2/minute", "classify_user": "4/minute"},
    }
    anonymous = APIClient(REMOTE_ADDR="203.0.113.7")
    statuses = [anonymous.post(URL, {"image": _jpeg()}).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]
    throttled = anonymous.post(URL, {"image": _jpeg()})
    assert throttled.json()["error"]["code"] == "throttled"
    # Another client address has its own allowance.
    assert APIClient(REMOTE_ADDR="203.0.113.8").post(URL, {"image": _jpeg()}).status_code == 202

    user = django_user_model.objects.create_user("api-user", password="x-long-password-1")
    token = Token.objects.create(user=user)
    with_token = APIClient(REMOTE_ADDR="203.0.113.7")
    with_token.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    statuses = [with_token.post(URL, {"image": _jpeg()}).status_code for _ in range(5)]
    assert statuses == [202, 202, 202, 202, 429]
    assert Classification.objects.filter(user=user).count() == 4
    # Polling for results is never throttled.
    job = Classification.objects.first()
    assert all(anonymous.get(f"{URL}{job.pk}/").status_code == 200 for _ in range(5))


def test_schema_documents_the_upload(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    post = schema["paths"][URL]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"202", "400", "429"} <= set(post["responses"])
    assert post["security"] and {} in post["security"]  # anonymous allowed
    assert "get" in schema["paths"][f"{URL}{{id}}/"]
