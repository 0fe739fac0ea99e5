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
        CarModel.objects.create(manufacturer=car.manufacturer, name="A4 ", year=2023, label="2023 Audi A4", slug="x")


def test_official_make_spelling():
    from catalog.naming import official_make

    assert official_make("mercedes benz") == "Mercedes-Benz"
    assert official_make("bmw") == "BMW"
    assert official_make("kia") == "Kia"
    assert official_make("McLaren") == "McLaren"


@pytest.mark.django_db
def test_gallery_falls_back_to_other_model_years_only_when_asked():
    import io

    from PIL import Image

    from catalog.models import ImageOrigin, ImageView
    from catalog.selectors import car_model_gallery

    new, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    old, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2011)
    other, _ = services.car_model_get_or_create(make="Acura", model="RDX", year=2011)
    for car, colour in ((old, (200, 0, 0)), (other, (0, 0, 200))):
        buffer = io.BytesIO()
        Image.new("RGB", (128, 96), colour).save(buffer, format="PNG")
        services.car_image_add(car, data=buffer.getvalue(), origin=ImageOrigin.IMPORTED, view=ImageView.EXTERIOR)
    fallback = car_model_gallery(new, view=ImageView.EXTERIOR)
    assert [image.car_model for image in fallback] == [old]
    assert car_model_gallery(old, view=ImageView.EXTERIOR)[0].car_model == old
    assert car_model_gallery(new, view=ImageView.INTERIOR) == []
