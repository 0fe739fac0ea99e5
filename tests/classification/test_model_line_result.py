"""A classifier that names a model line: the answer names the line, the visitor picks the year's specs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.services import car_model_get_or_create, specification_upsert
from classifier.models import Classification, ClassificationPrediction, ClassificationStatus, ModelKind, ModelVersion
from classifier.services.intake import Upload, classification_create
from classifier.services.registry import car_model_for_label
from tests.classification.conftest import image_bytes

pytestmark = pytest.mark.django_db


def _finished_job(label: str, car_model) -> Classification:
    version = ModelVersion.objects.create(
        kind=ModelKind.CLASSIFIER, version="line-test", architecture="test", bundle_path="x", labels=[label]
    )
    job = classification_create(Upload(image_bytes("JPEG", size=(400, 300)), "mine.jpg"))
    Classification.objects.filter(pk=job.pk).update(
        status=ClassificationStatus.DONE,
        gate_verdict="exterior",
        predicted_car_model=car_model,
        confidence=0.9,
        classifier_version=version,
    )
    ClassificationPrediction.objects.create(
        classification=job, rank=1, label=label, car_model=car_model, probability=0.9
    )
    return Classification.objects.get(pk=job.pk)


@pytest.fixture
def mdx_line(db) -> dict:
    years = {}
    for year, msrp, horsepower in ((2024, None, None), (2023, 49550, 290), (2013, 43000, 300)):
        car, _ = car_model_get_or_create(make="Acura", model="MDX", year=year, defaults={"msrp_usd": msrp})
        if horsepower:
            specification_upsert(car, values={"horsepower": horsepower}, source="csv:car_specs.csv")
        years[year] = car
    return years


def test_a_model_line_label_maps_to_its_newest_year_with_specs(mdx_line):
    assert car_model_for_label("Acura MDX", ModelKind.CLASSIFIER) == mdx_line[2023]
    assert car_model_for_label("2013 Acura MDX", ModelKind.CLASSIFIER) == mdx_line[2013]


def test_result_names_the_line_and_offers_every_year_with_its_specs(client, mdx_line):
    job = _finished_job("Acura MDX", mdx_line[2023])
    rdx, _ = car_model_get_or_create(make="Acura", model="RDX", year=2023)
    ClassificationPrediction.objects.create(
        classification=job, rank=2, label="Acura RDX", car_model=rdx, probability=0.05
    )
    html = client.get(reverse("classifier:result", kwargs={"pk": job.pk})).content.decode()
    assert '<h1 data-testid="best-match">Acura MDX</h1>' in html  # no year claimed
    assert "<span>Acura RDX</span>" in html and "2023 Acura RDX" not in html  # nor for the alternatives
    assert '<option value="2023" selected>2023</option>' in html
    assert '<option value="2024">2024 (no specifications)</option>' in html
    assert '<option value="2013">2013</option>' in html
    assert "MSRP across model years: $43,000 – $49,550" in html
    # each year's facts are on the page; only the default year's are shown
    assert '<div class="year-facts" data-year="2023">' in html
    assert '<div class="year-facts" data-year="2013" hidden>' in html
    year_2013 = html.split('data-year="2013" hidden>')[1].split('<div class="year-facts"')[0]
    assert "$43,000" in year_2013 and "300 hp" in year_2013

    body = client.get(f"/api/v1/classifications/{job.pk}/").json()["result"]
    assert body["year_decided"] is False
    assert body["car_model"]["label"] == "2023 Acura MDX"
    assert [year["year"] for year in body["model_line_years"]] == [2024, 2023, 2013]
    assert body["msrp_range"] == [43000, 49550]


def test_a_model_year_label_claims_its_year_and_offers_no_other(client, mdx_line):
    job = _finished_job("2013 Acura MDX", mdx_line[2013])
    html = client.get(reverse("classifier:result", kwargs={"pk": job.pk})).content.decode()
    assert '<h1 data-testid="best-match">2013 Acura MDX</h1>' in html
    assert "year-select" not in html
    body = client.get(f"/api/v1/classifications/{job.pk}/").json()["result"]
    assert (body["year_decided"], body["model_line_years"], body["msrp_range"]) == (True, [], None)


def test_an_abstained_result_shows_its_likely_models_with_photos_and_one_click_picks_one(admin_client, db):
    import io

    import numpy as np
    from PIL import Image

    from catalog.models import ImageOrigin, ImageView
    from catalog.services import car_image_add
    from classifier.models import Feedback

    cars = {}
    for i, name in enumerate(("MDX", "RDX", "TLX", "ILX")):
        cars[name], _ = car_model_get_or_create(make="Acura", model=name, year=2023)
        for shade in range(3):
            buffer = io.BytesIO()
            noise = np.random.default_rng(10 * i + shade).integers(0, 255, (96, 128, 3), dtype=np.uint8)
            Image.fromarray(noise).save(buffer, format="PNG")
            car_image_add(cars[name], data=buffer.getvalue(), origin=ImageOrigin.IMPORTED, view=ImageView.EXTERIOR)
    job = _finished_job("Acura MDX", cars["MDX"])
    Classification.objects.filter(pk=job.pk).update(abstained=True, predicted_car_model=None)
    for rank, (name, probability) in enumerate((("RDX", 0.05), ("TLX", 0.03), ("ILX", 0.02)), start=2):
        ClassificationPrediction.objects.create(
            classification=job, rank=rank, label=f"Acura {name}", car_model=cars[name], probability=probability
        )

    html = admin_client.get(reverse("classifier:result", kwargs={"pk": job.pk})).content.decode()
    candidates = html.split('data-testid="candidates"')[1].split("</ul>")[0]
    assert candidates.count('data-testid="candidate"') == 3  # the three likeliest, not the fourth
    assert candidates.count("<img") == 6  # two photos each
    assert "Acura MDX" in candidates and "Acura TLX" in candidates and "Acura ILX" not in candidates
    assert candidates.count('data-testid="pick-candidate"') == 3

    response = admin_client.post(
        reverse("classifier:feedback", kwargs={"pk": job.pk}), {"action": "correct", "car_model": cars["RDX"].pk}
    )
    assert response.status_code == 302
    assert Feedback.objects.get(classification=job).car_model == cars["RDX"]
    after = admin_client.get(reverse("classifier:result", kwargs={"pk": job.pk})).content.decode()
    assert 'data-testid="pick-candidate"' not in after and "2023 Acura RDX" in after
