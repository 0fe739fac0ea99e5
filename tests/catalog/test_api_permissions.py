"""API writes need the same model permissions as the admin: the staff flag alone is not enough."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog.models import CarImage, CarModel, ImageOrigin, ImageView, Manufacturer
from catalog.services import car_image_add
from tests.catalog.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


def _token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def bare_staff(django_user_model):
    """Staff with no permissions: the admin shows this account nothing it may change."""
    return django_user_model.objects.create_user("bare-staff", password="pw-bare-123", is_staff=True)


def test_staff_without_model_permissions_cannot_write(bare_staff, car_model):
    client = _token_client(bare_staff)
    image = car_image_add(
        car_model, data=make_image_bytes(), origin=ImageOrigin.IMPORTED, view=ImageView.EXTERIOR
    ).image
    png = SimpleUploadedFile("car.png", make_image_bytes(fmt="PNG", pattern=2), "image/png")

    assert (
        client.post("/api/v1/models/", {"manufacturer": "Kia", "name": "EV6", "year": 2023}, format="json").status_code
        == 403
    )
    assert client.patch(f"/api/v1/models/{car_model.pk}/", {"msrp_usd": 1}, format="json").status_code == 403
    assert client.delete(f"/api/v1/models/{car_model.pk}/").status_code == 403
    assert client.post("/api/v1/manufacturers/", {"name": "Kia"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/manufacturers/{car_model.manufacturer.slug}/").status_code == 403
    assert (
        client.post("/api/v1/images/", {"car_model": car_model.pk, "image": png}, format="multipart").status_code == 403
    )
    assert client.patch(f"/api/v1/images/{image.pk}/", {"view": "interior"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/images/{image.pk}/").status_code == 403

    car_model.refresh_from_db()
    assert car_model.msrp_usd == 49550
    assert list(CarModel.objects.values_list("name", flat=True)) == ["MDX"]
    assert list(Manufacturer.objects.values_list("name", flat=True)) == ["Acura"]
    assert list(CarImage.objects.values_list("pk", "view")) == [(image.pk, "exterior")]


def test_each_write_needs_its_own_permission(bare_staff, car_model):
    bare_staff.user_permissions.add(Permission.objects.get(codename="change_carmodel"))
    client = _token_client(bare_staff)

    assert client.patch(f"/api/v1/models/{car_model.pk}/", {"msrp_usd": 51000}, format="json").status_code == 200
    assert client.delete(f"/api/v1/models/{car_model.pk}/").status_code == 403
    assert client.post("/api/v1/manufacturers/", {"name": "Kia"}, format="json").status_code == 403
    car_model.refresh_from_db()
    assert car_model.msrp_usd == 51000


def test_permissions_without_the_staff_flag_cannot_write(django_user_model, car_model):
    user = django_user_model.objects.create_user("not-staff", password="pw-not-staff-123")
    user.user_permissions.add(Permission.objects.get(codename="change_carmodel"))

    response = _token_client(user).patch(f"/api/v1/models/{car_model.pk}/", {"msrp_usd": 1}, format="json")

    assert response.status_code == 403


def test_reads_stay_public(api_client, bare_staff, car_model):
    for client in (api_client, _token_client(bare_staff)):
        assert client.get("/api/v1/models/").status_code == 200
        assert client.get(f"/api/v1/models/{car_model.slug}/").status_code == 200
        assert client.get("/api/v1/manufacturers/").status_code == 200
        assert client.get("/api/v1/images/").status_code == 200
        assert client.get("/api/v1/").status_code == 200
