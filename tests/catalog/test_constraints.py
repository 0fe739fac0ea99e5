"""Database constraints of the catalog hold whatever code path writes."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from catalog import services
from catalog.models import CarImage, CarModel, ImageOrigin, Manufacturer, Specification
from tests.catalog.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


def test_label_is_unique_across_manufacturers_rows():
    car, _ = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    other = Manufacturer.objects.create(name="Audi Sport", slug="audi-sport")
    with pytest.raises(IntegrityError), transaction.atomic():
        CarModel.objects.create(manufacturer=other, name="A4 x", year=2023, label=car.label, slug="other-slug")


def test_same_make_name_year_is_refused_even_with_another_label():
    car, _ = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    with pytest.raises(IntegrityError), transaction.atomic():
        CarModel.objects.create(
            manufacturer=car.manufacturer, name="A4", year=2023, label="different", slug="different"
        )


@pytest.mark.parametrize("year", [1885, 2101])
def test_year_outside_plausible_range_is_refused(year):
    manufacturer = services.manufacturer_get_or_create("Audi")
    with pytest.raises(IntegrityError), transaction.atomic():
        CarModel.objects.create(
            manufacturer=manufacturer, name="A4", year=year, label=f"{year} Audi A4", slug=f"a{year}"
        )
    with pytest.raises(ValidationError):
        services.car_model_get_or_create(make="Audi", model="A4", year=year)


@pytest.mark.parametrize("field", ["displacement_l", "front_wheel_size_in", "length_in", "width_in", "height_in"])
def test_negative_dimensions_are_refused_by_the_database(field):
    car, _ = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    with pytest.raises(IntegrityError), transaction.atomic():
        Specification.objects.create(car_model=car, **{field: -1})


def test_negative_values_are_refused_by_the_services():
    car, _ = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    with pytest.raises(ValidationError):
        services.specification_upsert(car, values={"horsepower": -5})
    with pytest.raises(ValidationError):
        services.car_model_update(car, msrp_usd=-1)
    assert not Specification.objects.filter(car_model=car).exists()
    car.refresh_from_db()
    assert car.msrp_usd is None


def test_one_copy_of_an_image_per_car_model():
    car, _ = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    other, _ = services.car_model_get_or_create(make="Audi", model="A6", year=2023)
    data = make_image_bytes()
    first = services.car_image_add(car, data=data, origin=ImageOrigin.UPLOADED)
    again = services.car_image_add(car, data=data, origin=ImageOrigin.UPLOADED)
    elsewhere = services.car_image_add(other, data=data, origin=ImageOrigin.UPLOADED)
    assert first.saved and again.status == "duplicate" and again.duplicate_of == first.image
    assert elsewhere.saved, "the same photo may illustrate another car model"
    with pytest.raises(IntegrityError), transaction.atomic():
        CarImage.objects.create(
            car_model=car, image=first.image.image.name, sha256=first.image.sha256, width=1, height=1, origin="uploaded"
        )
    assert CarImage.objects.filter(car_model=car).count() == 1


def test_manufacturer_with_models_cannot_be_deleted():
    car, _ = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    with pytest.raises(ValidationError):
        services.manufacturer_delete(car.manufacturer)
    assert Manufacturer.objects.filter(pk=car.manufacturer_id).exists()
