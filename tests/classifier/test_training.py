"""train_classifier / train_gate / evaluate_model / activate_model on tiny generated data."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog import services as catalog_services
from catalog.models import ImageOrigin, ImageView
from classifier.models import ModelKind, ModelVersion
from classifier.services.registry import model_version_bundle_dir
from classifier.services.training import TrainingError, TrainingOptions, classifier_train
from ml.bundle import load_bundle

pytestmark = pytest.mark.django_db

# A few optimiser steps on 64 px images: enough to exercise the whole pipeline in seconds.
TINY = [
    "--crop-size",
    "64",
    "--epochs-head",
    "1",
    "--epochs-finetune",
    "1",
    "--batch-size",
    "4",
    "--max-steps-per-epoch",
    "2",
    "--no-augment",
    "--val-fraction",
    "0.25",
    "--test-fraction",
    "0.25",
]
# train_classifier on one train/val/test split instead of its default cross-validation
TINY_SPLIT = [*TINY, "--cv-folds", "0"]


@pytest.fixture
def tiny_catalog(photo_factory, tmp_path):
    """Exterior images of three car models (one of them too rare to train on) plus interior shots."""
    specs = [
        ("Acura", "MDX", 2023, (200, 20, 20), 6),
        ("Acura", "MDX", 2019, (200, 20, 20), 2),
        ("Audi", "A4", 2023, (20, 20, 200), 8),
        ("BMW", "X5", 2023, (20, 200, 20), 2),
    ]
    seed = 0
    for make, model, year, colour, count in specs:
        car_model, _ = catalog_services.car_model_get_or_create(make=make, model=model, year=year)
        for _ in range(count):
            seed += 1
            photo = photo_factory(tmp_path / f"{seed}.jpg", seed=seed, colour=colour)
            catalog_services.car_image_add(
                car_model,
                data=photo.read_bytes(),
                origin=ImageOrigin.IMPORTED,
                view=ImageView.EXTERIOR,
                view_confidence=1.0,
            )
        seed += 1
        inside = photo_factory(tmp_path / f"{seed}.jpg", seed=seed, colour=(250, 250, 250))
        catalog_services.car_image_add(
            car_model, data=inside.read_bytes(), origin=ImageOrigin.IMPORTED, view=ImageView.INTERIOR
        )


def test_train_classifier_registers_a_version_with_metrics(tiny_catalog):
    out = StringIO()
    call_command("train_classifier", "--min-images-per-class", "4", "--activate", *TINY_SPLIT, stdout=out)
    version = ModelVersion.objects.get(kind=ModelKind.CLASSIFIER)
    assert version.is_active
    assert version.labels == ["Acura MDX", "Audi A4"], "MDX years merge at label level 'model'; X5 is too rare"
    assert "dropped BMW X5: only 2 images" in out.getvalue()
    assert 0.0 <= version.metrics["top1"] <= 1.0
    assert version.metrics["n_train"] + version.metrics["n_val"] + version.metrics["n_test"] == 16
    assert "ece_calibrated" in version.metrics
    bundle = model_version_bundle_dir(version)
    for name in ("weights.safetensors", "bundle.json", "report.csv", "report.md", "confusion_matrix.png", "split.json"):
        assert (bundle / name).is_file(), name
    links = dict(version.label_links.values_list("label", "car_model__label"))
    assert links == {"Acura MDX": "2023 Acura MDX", "Audi A4": "2023 Audi A4"}
    # Interior shots are never training data.
    split = json.loads((bundle / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 16


def test_train_classifier_learns_from_every_image_and_records_cross_validated_figures(tiny_catalog):
    out = StringIO()
    call_command(
        "train_classifier",
        "--min-images-per-class",
        "4",
        "--crop-size",
        "48",
        "--epochs-finetune",
        "2",
        "--no-augment",
        stdout=out,
    )
    version = ModelVersion.objects.get(kind=ModelKind.CLASSIFIER)
    metrics = version.metrics
    assert metrics["n_train"] == metrics["n"] == 16  # every image trains the model and is scored out of fold
    assert metrics["evaluated_on"].startswith("out-of-fold") and metrics["folds"] >= 2
    assert {"top1_mean", "top1_std", "coverage", "ece_calibrated"} <= set(metrics)
    bundle = model_version_bundle_dir(version)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["preprocess"]["crop_size"] == 48
    assert meta["abstain_threshold"] == metrics["abstain_threshold"]
    split = json.loads((bundle / "split.json").read_text())
    assert len(split["train"]) == 16 and not split["val"] and not split["test"]
    assert (bundle / "risk_coverage.png").is_file()
    assert "out-of-fold" in out.getvalue()


def test_same_images_and_options_reuse_the_trained_bundle(tiny_catalog):
    options = TrainingOptions(
        label_level="model-year",
        min_images_per_class=5,
        crop_size=64,
        epochs_head=1,
        epochs_finetune=0,
        batch_size=4,
        max_steps_per_epoch=1,
        auto_augment=None,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    first = classifier_train(options)
    assert first.model_version.labels == ["2023 Acura MDX", "2023 Audi A4"]
    assert first.training_set.dropped == {"2019 Acura MDX": 2, "2023 BMW X5": 2}
    assert not first.reused_cached_bundle
    second = classifier_train(options)
    assert second.reused_cached_bundle and second.model_version.pk == first.model_version.pk
    assert ModelVersion.objects.count() == 1


def test_train_classifier_explains_when_there_is_too_little_data(tiny_catalog):
    with pytest.raises(CommandError, match="Need at least 2 classes"):
        call_command("train_classifier", "--min-images-per-class", "50", *TINY)
    with pytest.raises(CommandError, match="label level|invalid choice"):
        call_command("train_classifier", "--label-level", "trim")
    assert not ModelVersion.objects.exists()


def test_evaluate_and_activate_commands(tiny_catalog, tmp_path):
    call_command("train_classifier", "--min-images-per-class", "4", *TINY_SPLIT, stdout=StringIO())
    version = ModelVersion.objects.get()
    assert not version.is_active
    out = StringIO()
    call_command("evaluate_model", version.version[:8], "--output", str(tmp_path / "eval"), stdout=out)
    assert "Evaluated" in out.getvalue() and '"top1"' in out.getvalue()
    assert (tmp_path / "eval" / "report.csv").is_file()
    call_command("activate_model", str(version.pk), "--kind", "classifier", stdout=StringIO())
    version.refresh_from_db()
    assert version.is_active
    with pytest.raises(CommandError, match="No model version"):
        call_command("activate_model", "ffffffffffff")


def test_train_gate_needs_every_view(tiny_catalog):
    with pytest.raises(CommandError, match="every view"):
        call_command("train_gate", *TINY)
    with pytest.raises(TrainingError):
        from classifier.services.training import gate_train

        gate_train(TrainingOptions(min_images_per_class=3))


def test_train_gate_on_known_views(photo_factory, tmp_path):
    car_model, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    colours = {ImageView.EXTERIOR: (200, 30, 30), ImageView.INTERIOR: (30, 30, 30), ImageView.OTHER: (30, 200, 200)}
    seed = 0
    for view, colour in colours.items():
        for _ in range(4):
            seed += 1
            photo = photo_factory(tmp_path / f"{seed}.jpg", seed=seed, colour=colour)
            catalog_services.car_image_add(
                car_model, data=photo.read_bytes(), origin=ImageOrigin.IMPORTED, view=view, view_confidence=1.0
            )
    out = StringIO()
    call_command("train_gate", "--min-images-per-class", "3", "--activate", *TINY, stdout=out)
    gate = ModelVersion.objects.get(kind=ModelKind.GATE)
    assert gate.is_active and gate.labels == ["exterior", "interior", "other"]
    assert gate.metrics["cv_folds"] == 4 and gate.metrics["n"] == 12, "every photo scored out of fold"
    assert "Trained" in out.getvalue() and "macro recall" in out.getvalue()
    assert not gate.label_links.exclude(car_model=None).exists()


def test_train_classifier_task_runs_the_same_service(tiny_catalog):
    from classifier import tasks

    options = {
        "min_images_per_class": 4,
        "crop_size": 64,
        "epochs_head": 1,
        "epochs_finetune": 0,
        "batch_size": 4,
        "max_steps_per_epoch": 1,
        "auto_augment": None,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
    }
    tasks.train_classifier.delay(options, activate=True)
    version = ModelVersion.objects.get(kind=ModelKind.CLASSIFIER)
    assert version.is_active and version.labels == ["Acura MDX", "Audi A4"]


def _resized_copy(path, scale: float = 0.5) -> bytes:
    from io import BytesIO

    from PIL import Image

    with Image.open(path) as image:
        smaller = image.resize((int(image.width * scale), int(image.height * scale)))
    buffer = BytesIO()
    smaller.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_a_feedback_copy_of_a_catalog_photo_is_cross_validated_in_the_same_fold(photo_factory, tmp_path):
    """The same press photo of an MDX appears in the catalog (2019) and comes back as feedback (2023)."""
    from classifier.services.training import build_training_set, car_image_label, classifier_training_images
    from ml.data import grouped_folds

    mdx_2019, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2019)
    mdx_2023, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    a4, _ = catalog_services.car_model_get_or_create(make="Audi", model="A4", year=2023)
    catalog_sha = {}  # photo file -> the catalog image's content hash
    for seed in range(1, 21):
        photo = photo_factory(tmp_path / f"{seed}.jpg", seed=seed, colour=(200, 20, 20), size=(320, 240))
        added = catalog_services.car_image_add(
            (mdx_2019, a4)[seed % 2], data=photo.read_bytes(), origin=ImageOrigin.IMPORTED, view=ImageView.EXTERIOR
        )
        catalog_sha[photo] = added.image.sha256
    copies = {}  # feedback image's content hash -> its original's
    for photo in list(catalog_sha)[1:6:2]:  # three 2019 MDX photos
        added = catalog_services.car_image_add(
            mdx_2023, data=_resized_copy(photo), origin=ImageOrigin.FEEDBACK, view=ImageView.EXTERIOR
        )
        assert added.image is not None, "another car model's photo: stored, not dropped as its duplicate"
        copies[added.image.sha256] = catalog_sha[photo]

    images = list(classifier_training_images(TrainingOptions()))
    training_set = build_training_set(
        images,
        lambda image: car_image_label(image, "model"),
        dataset_dir=tmp_path / "dataset",
        min_images_per_class=1,
        dedup_distance=TrainingOptions().dedup_distance,
    )
    assert training_set.feedback == 3
    sha_of_record = [record.path.name.split("-")[0] for record in training_set.records]  # "<sha256>-1.jpg"
    assert set(copies) <= set(sha_of_record)
    for seed in range(5):
        fold_of = dict(zip(sha_of_record, grouped_folds(training_set.records, k=5, seed=seed), strict=True))
        assert [fold_of[copy] for copy in copies] == [fold_of[original] for original in copies.values()]


def test_train_classifier_reports_how_many_feedback_photos_it_used(tiny_catalog, photo_factory, tmp_path):
    mdx, _ = catalog_services.car_model_get_or_create(make="Acura", model="MDX", year=2023)
    for seed in (101, 102):
        photo = photo_factory(tmp_path / f"feedback-{seed}.jpg", seed=seed, colour=(200, 20, 20))
        catalog_services.car_image_add(
            mdx, data=photo.read_bytes(), origin=ImageOrigin.FEEDBACK, view=ImageView.EXTERIOR
        )
    out = StringIO()
    call_command("train_classifier", "--min-images-per-class", "4", *TINY, stdout=out)
    assert "accepted feedback photos: 2 of the 18 images" in out.getvalue()
    version = ModelVersion.objects.get(kind=ModelKind.CLASSIFIER)
    assert version.metrics["n_feedback"] == 2
    assert load_bundle(model_version_bundle_dir(version)).meta["metrics"]["n_feedback"] == 2


def test_a_new_default_recipe_trains_anew_instead_of_reusing_the_cached_bundle(tiny_catalog, monkeypatch, tmp_path):
    from dataclasses import replace

    import ml.train
    from classifier.services.training import _fingerprint, build_training_set, car_image_label
    from classifier.services.training import classifier_training_images as images_of

    options = TrainingOptions(min_images_per_class=4)
    training_set = build_training_set(
        images_of(options),
        lambda image: car_image_label(image, "model"),
        dataset_dir=tmp_path / "dataset",
        min_images_per_class=4,
        dedup_distance=options.dedup_distance,
    )
    before = _fingerprint(training_set, ModelKind.CLASSIFIER, options)
    recipe = ml.train.classifier_recipe
    monkeypatch.setattr(
        ml.train, "classifier_recipe", lambda arch: replace(recipe(arch), cached_views=recipe(arch).cached_views + 1)
    )
    assert _fingerprint(training_set, ModelKind.CLASSIFIER, options) != before
