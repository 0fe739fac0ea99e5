"""label_views: the active gate sets catalog image views, through Celery tasks (eager in tests)."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog import services as catalog_services
from catalog.models import CarImage, ImageOrigin, ImageView
from classifier.services.photos import NoActiveGate, car_images_label_views
from classifier.services.registry import model_version_activate, model_version_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def grace_hopper_bytes() -> bytes:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


@pytest.fixture
def catalog_images(grace_hopper_bytes, photo_factory, tmp_path):
    car_model, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    hopper = catalog_services.car_image_add(car_model, data=grace_hopper_bytes, origin=ImageOrigin.IMPORTED).image
    drawn = photo_factory(tmp_path / "drawn.jpg", seed=5, colour=(90, 90, 90))
    other = catalog_services.car_image_add(car_model, data=drawn.read_bytes(), origin=ImageOrigin.IMPORTED).image
    labelled = catalog_services.car_image_add(
        car_model,
        data=photo_factory(tmp_path / "manual.jpg", seed=6, colour=(10, 90, 200)).read_bytes(),
        origin=ImageOrigin.IMPORTED,
        view=ImageView.INTERIOR,
        view_confidence=1.0,
    ).image
    return {"hopper": hopper, "drawn": other, "labelled": labelled}


def test_label_views_needs_an_active_gate(catalog_images):
    with pytest.raises(CommandError, match="No gate is active"):
        call_command("label_views")
    with pytest.raises(NoActiveGate):
        car_images_label_views([catalog_images["hopper"].pk])


def test_label_views_sets_views_from_the_active_gate(
    catalog_images, zero_shot_gate_bundle, django_capture_on_commit_callbacks
):
    model_version_activate(model_version_register(zero_shot_gate_bundle))
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True) as queued:
        call_command("label_views", "--only-unknown", "--batch-size", "1", stdout=out)
    assert len(queued) == 2, "one task per batch, queued once the transaction commits"
    assert "Queued 2 images in 2 tasks" in out.getvalue()
    hopper = CarImage.objects.get(pk=catalog_images["hopper"].pk)
    assert hopper.view == ImageView.OTHER, "a portrait of a person is not a car"
    assert 0.5 < hopper.view_confidence <= 1.0
    drawn = CarImage.objects.get(pk=catalog_images["drawn"].pk)
    assert drawn.view in {ImageView.EXTERIOR, ImageView.INTERIOR, ImageView.OTHER}
    assert 0.0 <= drawn.view_confidence <= 1.0
    manual = CarImage.objects.get(pk=catalog_images["labelled"].pk)
    assert (manual.view, manual.view_confidence) == (ImageView.INTERIOR, 1.0), "--only-unknown keeps known views"


def test_label_views_service_is_idempotent_and_reports_missing_ids(catalog_images, zero_shot_gate_bundle):
    model_version_activate(model_version_register(zero_shot_gate_bundle))
    ids = [catalog_images["hopper"].pk, catalog_images["drawn"].pk, 999_999]
    first = car_images_label_views(ids)
    views = dict(CarImage.objects.values_list("pk", "view"))
    second = car_images_label_views(ids)
    assert first.labelled == second.labelled == 2
    assert first.missing == [999_999]
    assert dict(CarImage.objects.values_list("pk", "view")) == views
