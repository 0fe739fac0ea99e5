"""Bad input to the catalog API gets a 4xx answer in the API's error shape, never a 500, and changes nothing."""

import pytest

from catalog.models import Manufacturer
from tests.catalog.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(api_client):
    # A 500 must show up as a status code here, as it would to a caller, not as a raised exception.
    api_client.raise_request_exception = False
    return api_client


@pytest.mark.parametrize("resource", ["models", "manufacturers"])
@pytest.mark.parametrize(
    "id_or_slug",
    [
        "%C2%B2",  # "²": str.isdigit() is true, int() fails
        "%00",  # PostgreSQL refuses NUL in text
        "caf%C3%A9",  # no slug has non-ASCII letters
        "99999999999999999999999",  # an id beyond any key
    ],
)
def test_a_detail_that_is_neither_an_id_nor_a_slug_is_404(client, car_model, resource, id_or_slug):
    response = client.get(f"/api/v1/{resource}/{id_or_slug}/")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/v1/models/?manufacturer=%C2%B2", "manufacturer"),
        ("/api/v1/models/?manufacturer=%00", "manufacturer"),
        ("/api/v1/images/?car_model=%C2%B2", "car_model"),
        ("/api/v1/images/?car_model=a%20b", "car_model"),
        ("/api/v1/models/?page_size=-1.5", "page_size"),
        ("/api/v1/models/?page_size=0", "page_size"),
        ("/api/v1/manufacturers/?page_size=abc", "page_size"),
        ("/api/v1/images/?page=-1", "page"),
        ("/api/v1/models/?page=%C2%B2", "page"),
        ("/api/v1/models/?has_specs=2", "has_specs"),
        ("/api/v1/models/?has_images=maybe", "has_images"),
        ("/api/v1/models/?year=2023.5", "year"),
        ("/api/v1/models/?msrp_min=1e3", "msrp_min"),
        ("/api/v1/models/?ordering=bogus", "ordering"),
        ("/api/v1/manufacturers/?ordering=-slug", "ordering"),
        ("/api/v1/images/?ordering=id,sha256", "ordering"),
        # A parameter that is sent needs a value.
        ("/api/v1/models/?manufacturer=", "manufacturer"),
        ("/api/v1/images/?car_model=", "car_model"),
        ("/api/v1/models/?has_specs=", "has_specs"),
        ("/api/v1/models/?ordering=", "ordering"),
    ],
)
def test_an_invalid_query_value_is_refused_with_400_naming_the_parameter(client, car_model, url, param):
    response = client.get(url)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert param in error["fields"]
    assert error["message"].startswith(f"{param}: ")


def test_valid_query_values_still_filter_order_and_page(client, car_model):
    by_slug = client.get("/api/v1/models/", {"manufacturer": "acura", "has_specs": "true", "ordering": "-year"})
    assert by_slug.status_code == 200 and by_slug.json()["count"] == 1
    by_id = client.get("/api/v1/models/", {"manufacturer": car_model.manufacturer_id, "has_specs": "1"})
    assert by_id.json()["count"] == 1
    assert client.get("/api/v1/models/", {"has_specs": "false"}).json()["count"] == 0
    assert client.get("/api/v1/models/", {"manufacturer": "kia"}).json()["count"] == 0
    assert client.get("/api/v1/models/", {"page": "last", "page_size": "500"}).status_code == 200
    assert client.get("/api/v1/models/", {"page": "2"}).status_code == 404  # a real number past the end


@pytest.mark.parametrize(
    "url",
    ["/api/v1/images/1.5/", "/api/v1/classifications/not.a.uuid/", "/api/v1/no-such-resource/", "/api/v1/models/a/b/"],
)
def test_an_api_url_that_matches_no_route_is_404_in_json(client, url):
    response = client.get(url)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_an_unknown_classification_id_with_a_dot_is_404_in_the_api_error_shape(client):
    response = client.get("/api/v1/classifications/not.a.uuid/")

    assert response.json()["error"]["code"] == "not_found"


def test_staff_patch_of_a_manufacturer_with_an_empty_body_changes_nothing(staff_api_client, car_model):
    staff_api_client.raise_request_exception = False

    response = staff_api_client.patch("/api/v1/manufacturers/acura/", {}, format="json")

    assert response.status_code == 200
    assert response.json()["name"] == "Acura"
    assert Manufacturer.objects.get(slug="acura").name == "Acura"


def test_a_created_manufacturer_is_answered_with_its_model_count(staff_api_client, db):
    response = staff_api_client.post("/api/v1/manufacturers/", {"name": "Kia"}, format="json")

    assert response.status_code == 201
    assert response.json()["model_count"] == 0


def test_an_image_without_a_source_reads_source_url_null(staff_api_client, car_model):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = staff_api_client.post(
        "/api/v1/images/",
        {"car_model": car_model.pk, "image": SimpleUploadedFile("car.jpg", make_image_bytes(), "image/jpeg")},
        format="multipart",
    )

    assert upload.status_code == 201
    assert upload.json()["source_url"] is None
    assert staff_api_client.get(f"/api/v1/images/{upload.json()['id']}/").json()["source_url"] is None


def test_catalog_and_classification_errors_have_one_shape(client, car_model):
    """A 404 and a 400 from the catalog and from the classification API: the same keys, nested the same way."""
    answers = {
        "catalog 404": client.get("/api/v1/models/no-such-model/"),
        "classification 404": client.get("/api/v1/classifications/3f2b8c1e-0000-4000-8000-000000000000/"),
        "no route 404": client.get("/api/v1/no-such-resource/"),
        "catalog 400": client.get("/api/v1/models/", {"year": "soon"}),
        "classification 400": client.post("/api/v1/classifications/", {}, format="multipart"),
    }
    shapes = {}
    for name, response in answers.items():
        assert response.status_code == int(name[-3:]), name
        body = response.json()
        shapes[name] = (sorted(body), sorted(set(body["error"]) - {"fields"}))
    assert all(shape == (["error"], ["code", "message"]) for shape in shapes.values()), shapes
