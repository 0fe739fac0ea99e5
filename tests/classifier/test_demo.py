"""setup_demo / ensure_demo_models: a gate always, a demo classifier when labelled photos exist."""

import csv
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from classifier.demo import ZERO_SHOT_NOTES_PREFIX, ensure_demo_models
from classifier.models import ModelKind, ModelVersion
from classifier.runtime import get_active_model
from classifier.selectors.registry import active_model_version
from classifier.services.registry import model_version_register

pytestmark = pytest.mark.django_db


def test_setup_demo_without_photos_builds_a_gate_and_explains(settings, tmp_path):
    settings.CARSITE_DEMO_PHOTOS_DIR = tmp_path / "no-photos-here"
    out = StringIO()
    call_command("setup_demo", stdout=out)
    text = out.getvalue()
    assert "Built and activated the zero-shot gate" in text
    assert "No labelled demo photos" in text and "train_classifier" in text and "import_photos" in text
    gate = active_model_version(ModelKind.GATE)
    assert gate is not None and gate.labels == ["exterior", "interior", "other"]
    assert active_model_version(ModelKind.CLASSIFIER) is None
    out = StringIO()
    call_command("setup_demo", stdout=out)
    assert "Gate already active" in out.getvalue()
    assert ModelVersion.objects.count() == 1, "re-running builds nothing new"


def test_an_earlier_zero_shot_gate_is_reactivated_not_rebuilt(settings, tmp_path, zero_shot_gate_bundle):
    settings.CARSITE_DEMO_PHOTOS_DIR = tmp_path
    earlier = model_version_register(zero_shot_gate_bundle, notes=f"{ZERO_SHOT_NOTES_PREFIX} (test)")
    outcome = ensure_demo_models()
    assert outcome.gate.pk == earlier.pk and outcome.classifier is None
    assert ModelVersion.objects.count() == 1


def test_the_demo_classifier_learns_from_every_photo_near_duplicates_grouped(settings, tmp_path, zero_shot_gate_bundle):
    """The demo once imported one photo of each near-duplicate group, and trained on about 2/3 of its photos."""
    from PIL import Image

    from classifier.services.registry import model_version_bundle_dir
    from classifier.services.training import TrainingOptions
    from ml.bundle import load_bundle
    from tests.classifier.conftest import draw_photo

    settings.CARSITE_SHARED_DATA_DIR = tmp_path / "no-shared-data"  # no spec CSV to read
    model_version_register(zero_shot_gate_bundle, notes=f"{ZERO_SHOT_NOTES_PREFIX} (test)")
    photos = tmp_path / "photos"
    rows = []
    for first_seed, make, model, colour in ((0, "Acura", "MDX", (200, 20, 20)), (10, "Audi", "A4", (20, 20, 200))):
        for seed in range(first_seed, first_seed + 3):
            original = draw_photo(photos / "images" / f"{model}-{seed}.jpg", seed=seed, colour=colour, size=(320, 240))
            with Image.open(original) as image:  # the same press photo, smaller and recompressed
                image.resize((240, 180)).save(photos / "images" / f"{model}-{seed}-small.jpg", quality=70)
            rows += [
                f"{model}-{seed}{suffix}.jpg,{make},{model},2023,exterior,labelled-model" for suffix in ("", "-small")
            ]
    (photos / "manifest.csv").write_text("file,make,model,year,view,subject\n" + "\n".join(rows) + "\n")
    tiny = TrainingOptions(
        min_images_per_class=3, crop_size=48, epochs_finetune=1, auto_augment=None, cv_folds=2, seed=0
    )

    outcome = ensure_demo_models(photos, training=tiny)

    assert outcome.photo_import.counts["imported"] == 12
    metrics = outcome.classifier.metrics
    assert metrics["n_train"] == metrics["n"] == 12, "every photo trains the model and is scored out of fold"
    split = load_bundle(model_version_bundle_dir(outcome.classifier)).split()
    assert len({record.group for record in split.train}) == 6, "each photo and its near-duplicate share a group"
    assert any("on 12 photos" in message for message in outcome.messages)


@pytest.mark.slow
def test_demo_with_shared_photos_names_an_acura_mdx(shared_data, settings):
    from matplotlib import cbook

    from catalog.services import catalog_load

    labels = (Path(__file__).resolve().parents[2] / "catalog" / "data" / "catalog_2023.txt").read_text().splitlines()
    catalog_load(labels)
    photos = shared_data / "car-photos"
    outcome = ensure_demo_models(photos)
    classifier = active_model_version(ModelKind.CLASSIFIER)
    assert classifier is not None and outcome.classifier == classifier
    assert "Acura MDX" in classifier.labels and "Alfa Romeo 4C Spider" in classifier.labels
    assert all(len(label.split()) >= 2 and not label[:4].isdigit() for label in classifier.labels)
    assert classifier.metrics["top1"] > 1 / len(classifier.labels), "better than chance on held-out photos"
    with (photos / "manifest.csv").open(newline="") as handle:
        exterior = [r for r in csv.DictReader(handle) if r["view"] == "exterior" and r["subject"] == "labelled-model"]
    assert classifier.metrics["n_train"] == len(exterior), "the demo learns from every labelled exterior photo"

    loaded = get_active_model(ModelKind.CLASSIFIER)
    mdx_id = loaded.car_model_ids["Acura MDX"]
    # A model-line label stands for the line's newest year with specifications: here the photos' own
    # 2019, whose file names gave it approximate specs (the 2023 list's MDX has none without the CSV).
    assert classifier.label_links.get(label="Acura MDX").car_model.label == "2019 Acura MDX"
    with (photos / "manifest.csv").open(newline="") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["model"] == "MDX" and r["view"] == "exterior" and r["subject"] == "labelled-model"
        ]
    paths = [photos / "images" / r["file"] for r in rows]
    top1 = [ranked[0].label for ranked in loaded.predictor.predict(paths, top_k=1)]
    share = top1.count("Acura MDX") / len(top1)
    assert share >= 0.8, f"only {share:.0%} of {len(top1)} MDX photos named Acura MDX: {top1}"
    assert mdx_id == classifier.label_links.get(label="Acura MDX").car_model_id

    gate = get_active_model(ModelKind.GATE)
    hopper = gate.predictor.predict([cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)], top_k=1)[0][0]
    assert hopper.label == "other"

    # Re-running is quick: nothing is imported or trained again.
    again = ensure_demo_models(photos)
    assert again.classifier == classifier and again.photo_import is None
    # With the classifier deactivated, the cached bundle is reused instead of training again.
    ModelVersion.objects.filter(pk=classifier.pk).update(is_active=False)
    rerun = ensure_demo_models(photos)
    assert rerun.classifier.pk == classifier.pk
    assert any(message.startswith("Reused") for message in rerun.messages)
    assert rerun.photo_import.counts["imported"] == 0
