"""Server-rendered pages: home, catalog browse, model detail, supported models."""

import pytest

from catalog import selectors, services

pytestmark = pytest.mark.django_db


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def test_home_explains_the_site_and_links_to_upload(client, loaded_catalog):
    html = page(client, "/")
    assert "What car is that?" in html
    assert 'href="/classify/"' in html and "Upload a photo" in html
    assert "174 car models" in html and "31 manufacturers" in html
    for link in ('href="/catalog/"', 'href="/supported-models/"', 'href="/api/docs/"'):
        assert link in html
    assert 'name="viewport"' in html and "/static/carsite/site.css" in html


def test_catalog_lists_manufacturers_and_their_models(client, loaded_catalog):
    html = page(client, "/catalog/")
    assert 'href="/catalog/audi/"' in html and "Mercedes-Benz" in html and "13 models" in html
    audi = page(client, "/catalog/audi/")
    assert audi.count('href="/cars/2023-audi-') == 13
    assert 'href="/cars/2023-audi-e-tron-gt/"' in audi


def test_model_detail_shows_formatted_specs_and_galleries(client, car_model_with_images):
    html = page(client, car_model_with_images.get_absolute_url())
    assert "<h1>2023 Acura MDX</h1>" in html
    for text in ("$49,550", "3.5 L", "≈290 hp", "19/26 mpg", "19 in", "Front-wheel drive", "SUV"):
        assert text in html, text
    assert "None" not in html
    exterior = selectors.car_model_gallery(car_model_with_images, view="exterior")
    interior = selectors.car_model_gallery(car_model_with_images, view="interior")
    gallery_html = html.split('id="exterior-heading"')[1]
    assert exterior[0].image.url in gallery_html.split('id="interior-heading"')[0]
    assert interior[0].image.url in gallery_html.split('id="interior-heading"')[1]


def test_model_without_specs_or_images_says_so(client, db):
    car, _ = services.car_model_get_or_create(make="Honda", model="Fit", year=2020)
    html = page(client, car.get_absolute_url())
    assert "No specifications for this model yet." in html
    assert "No exterior photos yet." in html and "No interior photos yet." in html


def test_model_year_without_photos_shows_the_nearest_years_photos_labelled_by_year(client, db):
    import io

    from PIL import Image

    from catalog.models import ImageOrigin, ImageView

    def add_photo(car, view, colour):
        buffer = io.BytesIO()
        Image.new("RGB", (128, 96), colour).save(buffer, format="PNG")
        return services.car_image_add(car, data=buffer.getvalue(), origin=ImageOrigin.IMPORTED, view=view).image

    page_year, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    far, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2011)
    near, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2020)
    rival, _ = services.car_model_get_or_create(make="Acura", model="RDX", year=2023)
    far_photo = add_photo(far, ImageView.EXTERIOR, (200, 0, 0))
    near_photo = add_photo(near, ImageView.EXTERIOR, (0, 200, 0))
    add_photo(rival, ImageView.EXTERIOR, (0, 0, 200))
    add_photo(rival, ImageView.INTERIOR, (0, 0, 100))

    html = page(client, page_year.get_absolute_url())
    exterior_html = html.split('id="exterior-heading"')[1].split('id="interior-heading"')[0]
    assert "these show the nearest model years" in exterior_html
    # nearest year first, each photo labelled with its year; never another model line's photos
    assert exterior_html.index(near_photo.image.url) < exterior_html.index(far_photo.image.url)
    assert '<figcaption class="photo-year">2020</figcaption>' in exterior_html
    assert '<figcaption class="photo-year">2011</figcaption>' in exterior_html
    assert exterior_html.count("<img") == 2
    assert "No interior photos yet." in html  # interior and exterior stay separate

    own = page(client, near.get_absolute_url())
    assert "nearest model years" not in own and "photo-year" not in own
    # the model-year page links the line's other years, not other lines
    assert f'href="{far.get_absolute_url()}">2011</a>' in own
    assert f'href="{page_year.get_absolute_url()}">2023</a>' in own
    assert '<strong aria-current="page">2020</strong>' in own and rival.get_absolute_url() not in own


def test_unknown_slugs_are_404(client, db):
    assert client.get("/cars/2023-nope-nothing/").status_code == 404
    assert client.get("/catalog/no-such-make/").status_code == 404


def test_supported_models_lists_catalog_grouped_by_manufacturer(client, loaded_catalog):
    supported = selectors.supported_models_for_page([])
    assert supported.count == 174 and len(supported.groups) == 31
    assert not supported.from_classifier
    html = page(client, "/supported-models/")
    assert "174 car models" in html
    assert 'href="/cars/2023-volkswagen-id-4/"' in html
    assert html.index(">Acura<") < html.index(">Audi<") < html.index(">Volvo<")


def test_supported_models_follows_the_classifier_when_it_answers(client, loaded_catalog, monkeypatch):
    from catalog.models import CarModel

    acura = CarModel.objects.filter(manufacturer__slug="acura")
    monkeypatch.setattr("classifier.views.supported_car_models", lambda: acura)
    supported = selectors.supported_models_for_page(acura.values_list("pk", flat=True))
    assert supported.from_classifier and supported.count == 4
    html = page(client, "/supported-models/")
    assert "The active classifier can recognise these 4 car models" in html
    assert "/cars/2023-audi-" not in html


def test_nav_marks_the_current_page(client, db):
    html = page(client, "/supported-models/")
    assert 'href="/supported-models/" aria-current="page"' in html
