"""The catalog REST API: filters, search, ordering, pagination, detail shapes and write permissions."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services
from catalog.models import CarImage, CarModel, Manufacturer
from tests.catalog.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


def labels(response) -> list[str]:
    return [item["label"] for item in response.json()["results"]]


def test_the_13_audi_models_by_slug_and_by_id(api_client, loaded_catalog):
    by_slug = api_client.get("/api/v1/models/", {"manufacturer": "audi", "year": 2023})
    assert by_slug.status_code == 200
    assert by_slug.json()["count"] == 13
    assert all(label.startswith("2023 Audi ") for label in labels(by_slug))
    audi = Manufacturer.objects.get(slug="audi")
    by_id = api_client.get("/api/v1/models/", {"manufacturer": audi.pk, "year": 2023})
    assert labels(by_id) == labels(by_slug)
    assert api_client.get("/api/v1/models/", {"manufacturer": "audi", "year": 2022}).json()["count"] == 0


def test_filters_by_body_style_msrp_and_specs(api_client, car_model):
    cheap, _ = services.car_model_get_or_create(
        make="Honda", model="Fit", year=2020, defaults={"body_style": "hatchback", "msrp_usd": 17000}
    )
    assert labels(api_client.get("/api/v1/models/", {"body_style": "suv"})) == [car_model.label]
    assert labels(api_client.get("/api/v1/models/", {"msrp_min": 20000})) == [car_model.label]
    assert labels(api_client.get("/api/v1/models/", {"msrp_max": 20000})) == [cheap.label]
    assert labels(api_client.get("/api/v1/models/", {"msrp_min": 17000, "msrp_max": 49550})) == sorted(
        [cheap.label, car_model.label], key=lambda label: "Acura" not in label
    )
    assert labels(api_client.get("/api/v1/models/", {"has_specs": "true"})) == [car_model.label]
    assert labels(api_client.get("/api/v1/models/", {"has_specs": "false"})) == [cheap.label]
    assert api_client.get("/api/v1/models/", {"body_style": "spaceship"}).status_code == 400


def test_has_images_filter_and_image_filters(api_client, car_model_with_images):
    other, _ = services.car_model_get_or_create(make="Honda", model="Fit", year=2020)
    assert labels(api_client.get("/api/v1/models/", {"has_images": "true"})) == [car_model_with_images.label]
    assert labels(api_client.get("/api/v1/models/", {"has_images": "false"})) == [other.label]
    images = api_client.get("/api/v1/images/", {"car_model": car_model_with_images.pk}).json()
    assert images["count"] == 2
    exterior = api_client.get("/api/v1/images/", {"car_model": car_model_with_images.slug, "view": "exterior"}).json()
    assert [item["view"] for item in exterior["results"]] == ["exterior"]
    assert exterior["results"][0]["image"].startswith("http://testserver/media/")
    assert api_client.get("/api/v1/images/", {"car_model": other.pk}).json()["count"] == 0


def test_search_ordering_and_pagination(api_client, loaded_catalog):
    found = labels(api_client.get("/api/v1/models/", {"search": "mercedes"}))
    assert len(found) == 9 and all("Mercedes-Benz" in label for label in found)
    assert labels(api_client.get("/api/v1/models/", {"search": "ID.4"})) == ["2023 Volkswagen ID.4"]

    services.car_model_update(CarModel.objects.get(label="2023 Audi R8"), msrp_usd=249900)
    services.car_model_update(CarModel.objects.get(label="2023 Audi A3"), msrp_usd=34900)
    by_price = labels(api_client.get("/api/v1/models/", {"ordering": "-msrp_usd", "msrp_min": 1}))
    assert by_price == ["2023 Audi R8", "2023 Audi A3"]
    by_label = labels(api_client.get("/api/v1/models/", {"ordering": "label", "page_size": 5}))
    assert by_label == sorted(CarModel.objects.values_list("label", flat=True))[:5]
    by_make = api_client.get("/api/v1/models/", {"ordering": "-manufacturer", "page_size": 200}).json()["results"]
    makes = [item["manufacturer"]["name"] for item in by_make]
    assert makes == sorted(makes, reverse=True) and makes[0] == "Volvo"

    first = api_client.get("/api/v1/models/").json()
    assert first["count"] == 174 and len(first["results"]) == 20 and first["previous"] is None
    last = api_client.get("/api/v1/models/", {"page": 9}).json()
    assert len(last["results"]) == 14 and last["next"] is None
    assert api_client.get("/api/v1/models/", {"page": 10}).status_code == 404


def test_model_detail_by_id_and_slug_with_specs_and_grouped_images(api_client, car_model_with_images):
    by_slug = api_client.get(f"/api/v1/models/{car_model_with_images.slug}/")
    by_id = api_client.get(f"/api/v1/models/{car_model_with_images.pk}/")
    assert by_slug.status_code == by_id.status_code == 200
    body = by_slug.json()
    assert body == by_id.json()
    assert body["manufacturer"] == {"id": car_model_with_images.manufacturer_id, "name": "Acura", "slug": "acura"}
    assert body["specs"]["horsepower"] == 290 and body["specs"]["displacement_l"] == "3.5"
    assert body["specs"]["horsepower_approximate"] is True
    assert len(body["images"]["exterior"]) == 1 and len(body["images"]["interior"]) == 1
    assert body["images"]["exterior"][0]["image"].startswith("http://testserver/media/catalog/")
    assert body["page_url"] == "http://testserver/cars/2023-acura-mdx/"
    assert api_client.get("/api/v1/models/no-such-car/").status_code == 404


def test_manufacturer_list_and_detail_by_slug_or_id(api_client, loaded_catalog):
    listing = api_client.get("/api/v1/manufacturers/", {"page_size": 50}).json()
    assert listing["count"] == 31
    audi = next(item for item in listing["results"] if item["slug"] == "audi")
    assert audi["model_count"] == 13
    assert api_client.get("/api/v1/manufacturers/audi/").json()["id"] == audi["id"]
    assert api_client.get(f"/api/v1/manufacturers/{audi['id']}/").json()["slug"] == "audi"


def test_anonymous_and_non_staff_writes_are_refused(api_client, user_api_client, car_model):
    # Session authentication comes first, so an anonymous write is a 403 (not a 401), as for a non-staff user.
    for client in (api_client, user_api_client):
        assert client.post("/api/v1/models/", {"manufacturer": "Kia", "name": "EV6", "year": 2023}).status_code == 403
        assert client.patch(f"/api/v1/models/{car_model.pk}/", {"msrp_usd": 1}, format="json").status_code == 403
        assert client.delete(f"/api/v1/models/{car_model.pk}/").status_code == 403
        assert client.post("/api/v1/manufacturers/", {"name": "Kia"}).status_code == 403
    car_model.refresh_from_db()
    assert car_model.msrp_usd == 49550
    assert not CarModel.objects.filter(name="EV6").exists()


def test_staff_token_writes_go_through_services(staff_api_client, car_model):
    created = staff_api_client.post(
        "/api/v1/models/",
        {"manufacturer": "Kia", "name": "EV6", "year": 2023, "body_style": "suv", "specs": {"horsepower": 225}},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["label"] == "2023 Kia EV6" and body["specs"]["horsepower"] == 225
    assert (
        staff_api_client.post(
            "/api/v1/models/", {"manufacturer": "Kia", "name": "EV6", "year": 2023}, format="json"
        ).status_code
        == 409
    )

    patched = staff_api_client.patch(
        f"/api/v1/models/{car_model.slug}/", {"msrp_usd": 51000, "specs": {"mpg_city": 20}}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["msrp_usd"] == 51000 and patched.json()["specs"]["mpg_city"] == 20
    assert patched.json()["specs"]["mpg_highway"] == 26, "fields not sent keep their values"
    bad = staff_api_client.patch(f"/api/v1/models/{car_model.pk}/", {"msrp_usd": -3}, format="json")
    assert bad.status_code == 400
    car_model.refresh_from_db()
    assert car_model.msrp_usd == 51000

    kia = Manufacturer.objects.get(name="Kia")
    assert staff_api_client.delete(f"/api/v1/manufacturers/{kia.slug}/").status_code == 409
    assert staff_api_client.delete("/api/v1/models/2023-kia-ev6/").status_code == 204
    assert staff_api_client.delete(f"/api/v1/manufacturers/{kia.slug}/").status_code == 204


def test_staff_image_upload_is_normalised_deduplicated_and_validated(staff_api_client, car_model):
    png = make_image_bytes(fmt="PNG", pattern=2)
    upload = staff_api_client.post(
        "/api/v1/images/",
        {"car_model": car_model.pk, "view": "exterior", "image": SimpleUploadedFile("car.png", png, "image/png")},
        format="multipart",
    )
    assert upload.status_code == 201, upload.content
    stored = CarImage.objects.get(pk=upload.json()["id"])
    assert stored.image.name.endswith(".jpg") and stored.view == "exterior"
    again = staff_api_client.post(
        "/api/v1/images/",
        {"car_model": car_model.pk, "image": SimpleUploadedFile("again.png", png, "image/png")},
        format="multipart",
    )
    assert again.status_code == 409
    garbage = staff_api_client.post(
        "/api/v1/images/",
        {"car_model": car_model.pk, "image": SimpleUploadedFile("x.jpg", b"not an image", "image/jpeg")},
        format="multipart",
    )
    assert garbage.status_code == 400
    assert list(garbage.json()["error"]["fields"]) == ["image"]
    relabel = staff_api_client.patch(f"/api/v1/images/{stored.pk}/", {"view": "interior"}, format="json")
    assert relabel.status_code == 200 and relabel.json()["view"] == "interior"
    assert CarImage.objects.count() == 1
    assert staff_api_client.delete(f"/api/v1/images/{stored.pk}/").status_code == 204
    assert not CarImage.objects.exists()


def test_session_authenticated_staff_can_write(client, staff_user, car_model):
    from rest_framework.test import APIClient

    session_client = APIClient(enforce_csrf_checks=False)
    session_client.force_login(staff_user)
    response = session_client.patch(f"/api/v1/models/{car_model.pk}/", {"body_style": "wagon"}, format="json")
    assert response.status_code == 200 and response.json()["body_style"] == "wagon"


def test_schema_and_docs_are_served_locally(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/models/", "/api/v1/models/{id_or_slug}/", "/api/v1/manufacturers/", "/api/v1/images/"} <= set(
        paths
    )
    params = {p["name"] for p in paths["/api/v1/models/"]["get"]["parameters"]}
    assert {"manufacturer", "year", "body_style", "msrp_min", "msrp_max", "has_images", "has_specs", "search",
            "ordering", "page"} <= params  # fmt: skip
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()


def test_schema_generates_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_models_filter_by_model_line_lists_its_years(client, db):
    from catalog import services

    for year in (2019, 2020, 2023):
        services.car_model_get_or_create(make="Acura", model="MDX", year=year)
    services.car_model_get_or_create(make="Acura", model="RDX", year=2020)
    body = client.get("/api/v1/models/", {"model": "mdx", "manufacturer": "acura"}).json()
    assert sorted(row["year"] for row in body["results"]) == [2019, 2020, 2023]
    body = client.get("/api/v1/models/", {"model": "MDX", "year": 2020}).json()
    assert [row["label"] for row in body["results"]] == ["2020 Acura MDX"]


def test_schema_documents_the_error_answers_with_their_bodies(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]

    def body(operation, code):
        return operation["responses"][code]["content"]["application/json"]["schema"]

    models_list = paths["/api/v1/models/"]["get"]
    assert {"200", "400", "403", "404"} <= set(models_list["responses"])
    assert body(models_list, "400") == {"$ref": "#/components/schemas/Error"}
    assert {} in models_list["security"], "anyone may read"
    assert body(paths["/api/v1/models/{id_or_slug}/"]["delete"], "409") == {"$ref": "#/components/schemas/Error"}
    assert {"400", "403", "404"} <= set(paths["/api/v1/models/{id_or_slug}/"]["patch"]["responses"])
    assert {"403", "409"} <= set(paths["/api/v1/images/"]["post"]["responses"])
    upload = paths["/api/v1/classifications/"]["post"]["responses"]
    assert {"400", "403", "413", "429", "503"} <= set(upload)
    assert body({"responses": upload}, "403") == {"$ref": "#/components/schemas/Error"}
    assert schema["components"]["schemas"]["CarImage"]["properties"]["source_url"]["nullable"] is True
    ordering = next(p for p in models_list["parameters"] if p["name"] == "ordering")
    assert "-msrp_usd" in ordering["schema"]["enum"]
