"""Staff curation in the admin: pages load, filters work, saves go through the services."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import CarImage, CarModel, Manufacturer, Specification
from tests.catalog.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

ADMINS = ("manufacturer", "carmodel", "carimage")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_anonymous_is_sent_to_login(client, car_model):
    for name in ADMINS:
        response = client.get(reverse(f"admin:catalog_{name}_changelist"))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_non_staff_user_is_sent_to_login(client, plain_user):
    client.force_login(plain_user)
    response = client.get(reverse("admin:catalog_carmodel_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_changelist_change_and_add_pages_load_for_staff(staff_client, car_model_with_images):
    image = CarImage.objects.first()
    objects = {"manufacturer": car_model_with_images.manufacturer, "carmodel": car_model_with_images, "carimage": image}
    for name in ADMINS:
        assert staff_client.get(reverse(f"admin:catalog_{name}_changelist")).status_code == 200
        assert staff_client.get(reverse(f"admin:catalog_{name}_add")).status_code == 200
        change = staff_client.get(reverse(f"admin:catalog_{name}_change", args=[objects[name].pk]))
        assert change.status_code == 200
    changelist = staff_client.get(reverse("admin:catalog_carmodel_changelist")).content.decode()
    assert "$49,550" in changelist
    assert image.image.url in staff_client.get(reverse("admin:catalog_carimage_changelist")).content.decode()


def test_car_model_filters(staff_client, car_model_with_images):
    from catalog import services

    bare, _ = services.car_model_get_or_create(
        make="Honda", model="Fit", year=2020, defaults={"body_style": "hatchback"}
    )
    url = reverse("admin:catalog_carmodel_changelist")

    def listed(**params) -> set[str]:
        response = staff_client.get(url, params)
        assert response.status_code == 200
        return {car.label for car in response.context["cl"].result_list}

    assert listed(has_specs="yes") == {car_model_with_images.label}
    assert listed(has_specs="no") == {bare.label}
    assert listed(has_images="yes") == {car_model_with_images.label}
    assert listed(has_images="no") == {bare.label}
    assert listed(has_images="interior") == {car_model_with_images.label}
    assert listed(year="2020") == {bare.label}
    assert listed(body_style="suv") == {car_model_with_images.label}
    assert listed(manufacturer__id__exact=str(bare.manufacturer_id)) == {bare.label}
    assert listed(q="fit") == {bare.label}
    images = reverse("admin:catalog_carimage_changelist")
    assert len(staff_client.get(images, {"view": "interior"}).context["cl"].result_list) == 1
    assert len(staff_client.get(images, {"origin": "uploaded"}).context["cl"].result_list) == 0


def _car_model_post(car: CarModel, **overrides) -> dict:
    data = {
        "manufacturer": car.manufacturer_id,
        "name": car.name,
        "year": car.year,
        "body_style": car.body_style,
        "msrp_usd": car.msrp_usd or "",
        "specs-TOTAL_FORMS": "0",
        "specs-INITIAL_FORMS": "0",
        "specs-MIN_NUM_FORMS": "0",
        "specs-MAX_NUM_FORMS": "1",
        "images-TOTAL_FORMS": "0",
        "images-INITIAL_FORMS": "0",
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_adding_a_car_model_with_specs_and_an_image_in_admin(staff_client):
    audi = Manufacturer.objects.create(name="Audi", slug="audi")
    draft = CarModel(manufacturer=audi, name="Q4 e-tron", year=2023, body_style="suv", msrp_usd=49800)
    data = _car_model_post(
        draft,
        **{
            "specs-TOTAL_FORMS": "1",
            "specs-0-horsepower": "295",
            "specs-0-engine_type": "electric",
            "images-TOTAL_FORMS": "1",
            "images-0-view": "exterior",
            "images-0-upload": SimpleUploadedFile("q4.png", make_image_bytes(fmt="PNG"), "image/png"),
        },
    )
    response = staff_client.post(reverse("admin:catalog_carmodel_add"), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    car = CarModel.objects.get(label="2023 Audi Q4 e-tron")
    assert car.slug == "2023-audi-q4-e-tron" and car.msrp_usd == 49800
    assert car.specs.horsepower == 295 and car.specs.source == "admin"
    image = car.images.get()
    assert image.view == "exterior" and image.image.name.endswith(".jpg") and image.origin == "uploaded"


def test_admin_rejects_a_bad_image_with_a_form_error_not_a_500(staff_client, car_model):
    data = _car_model_post(
        car_model,
        **{
            "images-TOTAL_FORMS": "1",
            "images-0-view": "exterior",
            "images-0-upload": SimpleUploadedFile("x.jpg", b"definitely not a jpeg", "image/jpeg"),
        },
    )
    response = staff_client.post(reverse("admin:catalog_carmodel_change", args=[car_model.pk]), data)
    assert response.status_code == 200
    assert "not an image we can read" in response.content.decode()
    assert not CarImage.objects.exists()


def test_admin_duplicate_image_is_not_stored_twice(staff_client, car_model_with_images):
    existing = car_model_with_images.images.filter(view="exterior").get()
    data = {
        "car_model": car_model_with_images.pk,
        "view": "exterior",
        "source_url": "",
        "upload": SimpleUploadedFile("again.jpg", existing.image.read(), "image/jpeg"),
    }
    response = staff_client.post(reverse("admin:catalog_carimage_add"), data, follow=True)
    assert response.status_code == 200
    assert "already has" in response.content.decode()
    assert car_model_with_images.images.count() == 2


def test_admin_edit_validates_like_the_api(staff_client, car_model):
    url = reverse("admin:catalog_carmodel_change", args=[car_model.pk])
    spec = car_model.specs
    spec_forms = {
        "specs-TOTAL_FORMS": "1",
        "specs-INITIAL_FORMS": "1",
        "specs-0-id": spec.pk,
        "specs-0-car_model": car_model.pk,
        "specs-0-horsepower": "300",
        "specs-0-mpg_city": "19",
        "specs-0-mpg_highway": "26",
        "specs-0-engine_type": "gas",
    }
    bad = staff_client.post(url, _car_model_post(car_model, msrp_usd="-5", **spec_forms))
    assert bad.status_code == 200
    car_model.refresh_from_db()
    assert car_model.msrp_usd == 49550
    good = staff_client.post(url, _car_model_post(car_model, msrp_usd="51000", name="MDX Sport", **spec_forms))
    assert good.status_code == 302
    car_model.refresh_from_db()
    assert (car_model.msrp_usd, car_model.label, car_model.slug) == (
        51000,
        "2023 Acura MDX Sport",
        "2023-acura-mdx-sport",
    )
    assert Specification.objects.get(car_model=car_model).horsepower == 300
