"""The out-of-the-box demo: a working gate and, when labelled photos are at hand, a quick classifier.

``ensure_demo_models`` is what ``manage.py setup_demo`` (run by ``make run``) calls. It is quick to
re-run: an active gate or classifier is left alone, and the demo classifier is trained once,
deterministically, and cached under CARSITE_MODELS_DIR by the hash of its images and options.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from classifier.models import ModelKind, ModelVersion
from classifier.selectors.registry import active_model_version
from classifier.services.photos import PhotoImportResult, find_manifest, photos_import
from classifier.services.registry import RegistryError, model_version_activate
from classifier.services.training import (
    TrainingError,
    TrainingOptions,
    classifier_train,
    gate_build_zero_shot,
    gate_train,
)
from ml import CLASSIFIER_ARCH, GATE_ARCH

logger = logging.getLogger(__name__)

ZERO_SHOT_NOTES_PREFIX = "zero-shot gate"

# Deterministic (fixed seed), with the recipe the benchmark cross-validates (ml.train.classifier_recipe):
# 5-fold cross-validation for the figures, temperature and abstain threshold, then the model on every
# photo. Min 3 images per class keeps the Alfa Romeo 4C Spider (4 distinct photos). lite1: more photos right
# than lite0 for 1.5x its compute (bench/ml_benchmark.py).
DEMO_TRAINING = TrainingOptions(
    arch=CLASSIFIER_ARCH,
    label_level="model",
    min_images_per_class=3,
    seed=0,
    cv_folds=5,
)


# The gate learns exterior / interior / other from all the photos' view labels with ml.gate.GateRecipe's
# recipe, cross-validated on the way (its metrics); a minute or two on 2 CPU cores.
DEMO_GATE_TRAINING = TrainingOptions(arch=GATE_ARCH, min_images_per_class=3, seed=0)


@dataclass
class DemoOutcome:
    gate: ModelVersion | None = None
    classifier: ModelVersion | None = None
    photo_import: PhotoImportResult | None = None
    messages: list[str] = field(default_factory=list)


def _has_photos(photos_dir: Path) -> bool:
    if not photos_dir.is_dir():
        return False
    if find_manifest(photos_dir) is not None:
        return True
    return any(p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") for p in photos_dir.rglob("*"))


def ensure_gate(say: Callable[[str], None]) -> ModelVersion:
    """The active gate; activates an earlier zero-shot gate or builds one when none is active."""
    active = active_model_version(ModelKind.GATE)
    if active is not None:
        say(f"Gate already active: {active}.")
        return active
    for earlier in ModelVersion.objects.filter(kind=ModelKind.GATE, notes__startswith=ZERO_SHOT_NOTES_PREFIX):
        try:
            gate = model_version_activate(earlier)
        except RegistryError:
            continue  # its bundle is gone: build a new one
        say(f"Activated the zero-shot gate built earlier: {gate}.")
        return gate
    gate = gate_build_zero_shot(activate=True)
    say(f"Built and activated the zero-shot gate: {gate}.")
    return gate


def reapply_specs(car_model_labels: list[str], say: Callable[[str], None]) -> None:
    """Give car models the photo import just created their specifications from the shared spec CSV."""
    if not car_model_labels:
        return
    specs_csv = Path(settings.CARSITE_SHARED_DATA_DIR) / "specs" / "car_specs.csv"
    if not specs_csv.is_file():
        say(f"No spec CSV at {specs_csv}: the {len(car_model_labels)} new car models have no specifications.")
        return
    try:
        from catalog import spec_import
    except ImportError:
        say("The catalog has no spec import yet: skipped specifications of the new car models.")
        return
    wanted = {label.lower() for label in car_model_labels}

    def row_label(row: dict[str, str]) -> str:
        label = (row.get(spec_import.COLUMN_LABEL) or "").strip()
        if not label:
            label = " ".join(f"{row.get('Year', '')} {row.get('Make', '')} {row.get('Model', '')}".split())
        return " ".join(label.split()).lower()

    all_rows = spec_import.read_rows(spec_import.read_file(specs_csv))
    rows = [(line, row) for line, row in all_rows if row_label(row) in wanted]
    result = spec_import.spec_import(rows, source=f"csv:{specs_csv.name}")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in result.counts.items() if n)
    say(f"Specifications for the new car models from {specs_csv.name}: {counts or 'no matching rows'}.")


def ensure_demo_models(
    photos_dir: Path | None = None,
    *,
    force: bool = False,
    say: Callable[[str], None] | None = None,
    training: TrainingOptions | None = None,
) -> DemoOutcome:
    """Make sure a gate is active and, if labelled demo photos exist, a classifier too.

    With photos and no active classifier (or ``force``): import them, give the new car models their
    specifications, train the demo classifier (or reuse the one cached for the same photos and options)
    and activate it. Without photos, explain how to train one.
    """
    outcome = DemoOutcome()

    def note(message: str) -> None:
        outcome.messages.append(message)
        if say is not None:
            say(message)
        else:  # said once: to the caller, or else to the log
            logger.info(message)

    outcome.gate = ensure_gate(note)
    active = active_model_version(ModelKind.CLASSIFIER)
    if active is not None and not force:
        note(f"Classifier already active: {active}.")
        outcome.classifier = active
        return outcome
    photos_dir = Path(photos_dir or settings.CARSITE_DEMO_PHOTOS_DIR)
    if not _has_photos(photos_dir):
        note(
            f"No labelled demo photos at {photos_dir}, so no classifier was trained. To train one: "
            "`manage.py import_photos DIR --view-from-manifest` (or label views with `manage.py label_views`), "
            "then `manage.py train_classifier --activate`. Set CARSITE_DEMO_PHOTOS_DIR to use another folder."
        )
        outcome.classifier = active
        return outcome
    # Near-duplicates kept (only exact copies are skipped): the training set groups them into one fold,
    # as the benchmark does, instead of the catalog keeping one photo of each group.
    result = photos_import(photos_dir, view_from_manifest=True, year_as_label=True, near_duplicate_distance=0)
    outcome.photo_import = result
    counts = ", ".join(f"{n} {outcome_name}" for outcome_name, n in result.counts.items())
    note(f"Photos from {photos_dir}: {counts}; {len(result.car_models_created)} car models created.")
    reapply_specs(result.car_models_created, note)
    outcome.gate = ensure_trained_gate(outcome.gate, result.image_ids, force=force, say=note)
    options = training or DEMO_TRAINING
    options = TrainingOptions(**{**options.__dict__, "image_ids": result.image_ids})
    note("Training the demo classifier (reused from cache when the photos and options are unchanged)…")
    trained = classifier_train(options, activate=True, reuse_cached=not force, notes="demo classifier")
    outcome.classifier = trained.model_version
    top1 = trained.metrics.get("top1")
    dropped = ", ".join(trained.training_set.dropped)
    note(
        f"{'Reused' if trained.reused_cached_bundle else 'Trained'} and activated the demo classifier "
        f"{trained.model_version} on {len(trained.training_set.records)} photos of "
        f"{len(trained.training_set.labels)} models"
        + (
            f" (top-1 {top1:.0%} over {trained.metrics.get('folds')}-fold cross-validation)"
            if isinstance(top1, float) and trained.metrics.get("folds")
            else ""
        )
        + (f"; dropped for too few photos: {dropped}" if dropped else "")
        + "."
    )
    return outcome


def ensure_trained_gate(
    gate: ModelVersion, image_ids: list[int], *, force: bool, say: Callable[[str], None]
) -> ModelVersion:
    """Replace the zero-shot gate by one trained on the demo photos' view labels, when they have them."""
    if not force and not gate.notes.startswith(ZERO_SHOT_NOTES_PREFIX):
        return gate  # a trained gate is already active
    options = TrainingOptions(**{**DEMO_GATE_TRAINING.__dict__, "image_ids": image_ids})
    try:
        trained = gate_train(options, activate=True, reuse_cached=not force, notes="demo gate")
    except TrainingError as exc:
        say(f"Kept the zero-shot gate: {exc}")
        return gate
    recall = trained.metrics.get("macro_recall")
    say(
        f"{'Reused' if trained.reused_cached_bundle else 'Trained'} and activated the demo gate "
        f"{trained.model_version} on {len(trained.training_set.records)} photos with view labels"
        + (f" (cross-validated macro recall {recall:.0%})" if isinstance(recall, float) else "")
        + "."
    )
    return trained.model_version
