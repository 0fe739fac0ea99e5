import pytest
from django.db import IntegrityError

from catalog import services
from catalog.models import CarModel
from catalog.naming import parse_label


def test_parse_label_keeps_dotted_model_names():
    name = parse_label("2023 Volkswagen ID.4")
    assert (name.year, name.make, name.model) == (2023, "Volkswagen", "ID.4")
    assert parse_label("2023 Volkswagen ID").label == "2023 Volkswagen ID.4"
    assert parse_label("2023 Alfa Romeo Giulia").make == "Alfa Romeo"


@pytest.mark.django_db
def test_car_model_label_is_unique():
    car, created = services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    assert created and car.label == "2023 Audi A4"
    again, created_again = services.car_model_get_or_create(make="audi", model="A4", year=2023)
    assert again.pk == car.pk and not created_again
    with pytest.raises(IntegrityError):
        CarModel.objects.create(
            manufacturer=car.manufacturer, name="A4 ", year=2023, label="2023 Audi A4", slug="x"
        )


def test_official_make_spelling():
    from catalog.naming import official_make

    assert official_make("mercedes benz") == "Mercedes-Benz"
    assert official_make("bmw") == "BMW"
    assert official_make("kia") == "Kia"
    assert official_make("McLaren") == "McLaren"
