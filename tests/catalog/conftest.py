"""Fixtures for the catalog tests: a loaded catalog, users, API clients and small generated images."""

import io
from pathlib import Path

import pytest
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog import services
from catalog.models import CarModel, ImageOrigin, ImageView, Manufacturer
from catalog.naming import make_slug, parse_label

CATALOG_LIST = Path(__file__).resolve().parents[2] / "catalog" / "data" / "catalog_2023.txt"


def make_image_bytes(
    size: tuple[int, int] = (160, 120),
    colour: tuple[int, int, int] = (200, 30, 30),
    fmt: str = "JPEG",
    pattern: int = 0,
) -> bytes:
    """A small image with a distinct pattern so different ``pattern`` values are not near-duplicates."""
    image = Image.new("RGB", size, colour)
    pixels = image.load()
    width, height = size
    for x in range(width):
        for y in range(height):
            if ((x * (pattern + 1)) // 16 + (y * (pattern + 2)) // 12) % 2:
                pixels[x, y] = (255 - colour[0], 255 - colour[1], (colour[2] + 90 * pattern) % 256)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def loaded_catalog(db) -> None:
    """The 174 models of the bundled list, bulk-inserted (the command itself is tested in test_load_catalog)."""
    names = {}
    for line in CATALOG_LIST.read_text().splitlines():
        if line.strip():
            name = parse_label(line)
            names[name.label] = name
    makes = {name.make for name in names.values()}
    Manufacturer.objects.bulk_create([Manufacturer(name=make, slug=make_slug(make)) for make in sorted(makes)])
    by_name = {m.name: m for m in Manufacturer.objects.all()}
    CarModel.objects.bulk_create(
        [
            CarModel(manufacturer=by_name[n.make], name=n.model, year=n.year, label=n.label, slug=n.slug)
            for n in names.values()
        ]
    )


@pytest.fixture
def car_model(db) -> CarModel:
    car, _ = services.car_model_get_or_create(
        make="Acura", model="MDX", year=2023, defaults={"body_style": "suv", "msrp_usd": 49550}
    )
    services.specification_upsert(
        car,
        values={
            "engine_type": "gas",
            "displacement_l": "3.5",
            "horsepower": 290,
            "horsepower_approximate": True,
            "mpg_city": 19,
            "mpg_highway": 26,
            "front_wheel_size_in": "19",
            "seats": 7,
            "doors": 4,
            "drivetrain": "FWD",
        },
        source="test",
    )
    return car


@pytest.fixture
def car_model_with_images(car_model: CarModel) -> CarModel:
    services.car_image_add(
        car_model, data=make_image_bytes(pattern=0), origin=ImageOrigin.IMPORTED, view=ImageView.EXTERIOR
    )
    services.car_image_add(
        car_model,
        data=make_image_bytes(pattern=3, colour=(20, 90, 200)),
        origin=ImageOrigin.IMPORTED,
        view=ImageView.INTERIOR,
    )
    return car_model


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("curator", password="pw-curator-123", is_staff=True, is_superuser=True)


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("visitor", password="pw-visitor-123")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_api_client(staff_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")
    return client


@pytest.fixture
def user_api_client(plain_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=plain_user).key}")
    return client


@pytest.fixture
def specs_csv(shared_data) -> Path:
    path = shared_data / "specs" / "car_specs.csv"
    if not path.is_file():
        pytest.skip(f"no spec CSV at {path}")
    return path
