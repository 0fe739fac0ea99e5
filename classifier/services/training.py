"""Training and evaluating models on the catalog's images, with the plain-PyTorch ``ml`` package.

The catalog is turned into a manifest whose image names are content hashes (copies of the stored files,
read through the media storage, a bucket shared by several hosts or the local disk), so the same images
always give the same manifest order, split and training run whatever the storage names: training is
deterministic for a given seed, and its result can be cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db.models import QuerySet

from catalog.models import CarImage, ImageOrigin, ImageView
from classifier.models import ModelKind, ModelVersion
from classifier.services.registry import (
    RegistryError,
    model_version_activate,
    model_version_bundle_dir,
    model_version_register,
    models_dir,
)
from ml import CLASSIFIER_ARCH, GATE_ARCH

logger = logging.getLogger(__name__)

LABEL_LEVELS = ("model", "model-year")
GATE_LABELS = ("exterior", "interior", "other")


class TrainingError(Exception):
    """Training cannot start or finish (too little data, bad options); the message says what to do."""


@dataclass
class TrainingOptions:
    """What to train on and how; every field has a sensible default for a real run."""

    arch: str = CLASSIFIER_ARCH  # the gate's own default is GateRecipe's (train_gate, the demo)
    years: list[int] | None = None
    label_level: str = "model"
    min_images_per_class: int = 5
    # None: the recipe's default (the classifier's is ml.train.classifier_recipe, chosen by the benchmark's
    # cross-validation; the gate's ml.train.TrainConfig), so the site trains what the benchmark measures.
    epochs_head: int | None = None
    epochs_finetune: int | None = None
    batch_size: int | None = None
    crop_size: int | None = None
    lr_head: float | None = None
    lr_finetune: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    auto_augment: str | None = "recipe"  # "recipe": the recipe's own; None: no automatic augmentation
    patience: int | None = None
    seed: int = 0
    # The classifier: cross-validate over this many near-duplicate-grouped folds, then train on every image
    # (metrics, temperature and threshold are the out-of-fold ones). 0: one train/val/test split instead.
    cv_folds: int = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    dedup_distance: int = 6
    max_steps_per_epoch: int | None = None
    weights: str | None = "imagenet"
    image_ids: list[int] | None = None  # restrict training to these catalog images

    def __post_init__(self) -> None:
        if self.label_level not in LABEL_LEVELS:
            raise TrainingError(f"label level must be one of {', '.join(LABEL_LEVELS)}, not {self.label_level!r}")
        if self.min_images_per_class < 1:
            raise TrainingError("the minimum number of images per class must be at least 1")
        epochs = [e for e in (self.epochs_head, self.epochs_finetune) if e is not None]
        if any(e < 0 for e in epochs) or (len(epochs) == 2 and sum(epochs) == 0):
            raise TrainingError("train for at least one epoch")
        if not (self.val_fraction >= 0 and self.test_fraction >= 0 and self.val_fraction + self.test_fraction < 1):
            raise TrainingError("validation and test fractions must be ≥ 0 and add up to less than 1")
        from ml import ARCHITECTURES

        if self.cv_folds == 1 or self.cv_folds < 0:
            raise TrainingError("cross-validate over at least 2 folds (or 0 for a train/val/test split)")
        if self.arch not in ARCHITECTURES:
            raise TrainingError(f"unknown architecture {self.arch!r}; choose from {', '.join(ARCHITECTURES)}")

    def train_config(self, kind: str) -> Any:  # -> ml.train.TrainConfig for ModelKind ``kind``
        from ml.train import TrainConfig, classifier_recipe

        base = classifier_recipe(self.arch) if kind == ModelKind.CLASSIFIER else TrainConfig(arch=self.arch)
        recipe = {
            name: getattr(self, name)
            for name in (
                "epochs_head",
                "epochs_finetune",
                "lr_head",
                "lr_finetune",
                "weight_decay",
                "label_smoothing",
                "batch_size",
                "patience",
            )
            if getattr(self, name) is not None
        }
        frame = base.frame_size
        if self.crop_size and frame:  # a whole-frame recipe: the crop size is the frame's height
            frame = (self.crop_size, round(self.crop_size * frame[1] / frame[0]))
        return replace(
            base,
            weights=self.weights,
            crop_size=self.crop_size,
            frame_size=frame,
            auto_augment=base.auto_augment if self.auto_augment == "recipe" else self.auto_augment,
            seed=self.seed,
            device="cpu",
            max_steps_per_epoch=self.max_steps_per_epoch,
            **recipe,
        )

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that changes the trained weights except which images (hashed separately)."""
        return {k: v for k, v in asdict(self).items() if k not in ("image_ids", "years", "min_images_per_class")}


@dataclass
class TrainingSet:
    records: list[Any]  # ml.data.ManifestRecord, grouped by near-duplicates
    labels: list[str]
    counts: dict[str, int]
    dropped: dict[str, int]
    manifest_path: Path
    content_hash: str
    feedback: int = 0  # how many of the records are accepted visitor feedback photos


@dataclass
class TrainingOutcome:
    model_version: ModelVersion
    training_set: TrainingSet
    metrics: dict[str, Any] = field(default_factory=dict)
    reused_cached_bundle: bool = False


# ---------------------------------------------------------------- catalog -> manifest


def _require_torch() -> None:
    """Training and evaluating need torch: in a serving install, a TrainingError naming the extra to install."""
    from ml import require_torch

    try:
        require_torch()
    except RuntimeError as exc:
        raise TrainingError(str(exc)) from None


def car_image_label(image: CarImage, label_level: str) -> str:
    if label_level == "model-year":
        return image.car_model.label
    return f"{image.car_model.manufacturer.name} {image.car_model.name}"


def _copy_image(image: CarImage, target: Path) -> None:
    """The stored photo's bytes at ``target`` (ml reads files); a partial copy never takes its name."""
    if target.exists():
        return
    partial = target.with_name(f".{target.name}-{uuid.uuid4().hex[:8]}")
    try:
        with image.image.open("rb") as source, partial.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)


def build_training_set(
    images: Iterable[CarImage],
    label_of: Callable[[CarImage], str],
    *,
    dataset_dir: Path,
    min_images_per_class: int,
    dedup_distance: int,
) -> TrainingSet:
    """Manifest of ``images`` under ``dataset_dir``: classes under the minimum are dropped and reported."""
    from ml.data import ManifestRecord, group_near_duplicates, write_manifest

    labelled = sorted({(image.sha256, label_of(image)): image for image in images}.items())
    counts = Counter(label for (_, label), _ in labelled)
    dropped = {label: n for label, n in sorted(counts.items()) if n < min_images_per_class}
    kept = [(sha, label, image) for (sha, label), image in labelled if label not in dropped]
    images_dir = dataset_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    records: list[ManifestRecord] = []
    hashes: list[int | None] = []
    seen: Counter[str] = Counter()
    for sha, label, image in kept:
        seen[sha] += 1
        path = images_dir / f"{sha}-{seen[sha]}.jpg"
        _copy_image(image, path)
        records.append(ManifestRecord(path, label))
        hashes.append(int(image.phash, 16) if image.phash else None)
    if records:
        # Near-duplicates (the same press photo in several galleries) must stay on one side of the split.
        known = [h for h in hashes if h is not None]
        stored = known if len(known) == len(hashes) else None  # computed from the files when any is missing
        records = group_near_duplicates(records, max_distance=dedup_distance, hashes=stored)
    manifest_path = dataset_dir / "manifest.csv"
    write_manifest(records, manifest_path)
    content = hashlib.sha256(json.dumps([(sha, label) for sha, label, _ in kept]).encode()).hexdigest()
    return TrainingSet(
        records=records,
        labels=sorted({label for _, label, _ in kept}),
        counts={label: n for label, n in sorted(counts.items()) if label not in dropped},
        dropped=dropped,
        manifest_path=manifest_path,
        content_hash=content,
        feedback=sum(image.origin == ImageOrigin.FEEDBACK for _, _, image in kept),
    )


def classifier_training_images(options: TrainingOptions) -> QuerySet[CarImage]:
    """The catalog's exterior images the classifier learns from."""
    queryset = CarImage.objects.filter(view=ImageView.EXTERIOR).select_related("car_model__manufacturer")
    if options.years:
        queryset = queryset.filter(car_model__year__in=options.years)
    if options.image_ids is not None:
        queryset = queryset.filter(pk__in=options.image_ids)
    return queryset


def _fingerprint(training_set: TrainingSet, kind: str, options: TrainingOptions) -> str:
    fields = {"kind": kind, "images": training_set.content_hash, "options": options.fingerprint_fields()}
    # The recipe's defaults change the trained model too: a new default recipe trains anew.
    if kind == ModelKind.GATE:
        fields["recipe"] = asdict(gate_recipe(options))
    else:
        fields["recipe"] = asdict(options.train_config(kind))
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# ---------------------------------------------------------------- training


def _cached_bundle(path: Path) -> bool:
    from ml.bundle import BundleIntegrityError, load_bundle

    try:
        load_bundle(path)
    except (FileNotFoundError, BundleIntegrityError):
        return False
    return True


def _fit(
    training_set: TrainingSet,
    options: TrainingOptions,
    *,
    kind: str,
    labels: list[str],
    output: Path,
    progress: bool,
) -> dict[str, Any]:
    from ml.models import PretrainedWeightsUnavailable

    work_dir = output.parent / f".{output.name}-work-{uuid.uuid4().hex[:8]}"
    staging = output.parent / f".{output.name}-{uuid.uuid4().hex[:8]}"
    try:
        if kind == ModelKind.GATE:
            from ml.gate import train_gate

            # Cross-validated, then trained on every photo (see ml.gate).
            metrics = train_gate(training_set.records, staging, gate_recipe(options), report_dir=work_dir)
        else:
            metrics = _fit_classifier(training_set, options, labels, staging, work_dir, progress)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)  # the cache only ever holds complete bundles
    except PretrainedWeightsUnavailable as exc:
        raise TrainingError(str(exc)) from exc
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _fit_classifier(
    training_set: TrainingSet,
    options: TrainingOptions,
    labels: list[str],
    staging: Path,
    work_dir: Path,
    progress: bool,
) -> dict[str, Any]:
    from ml.data import split_grouped
    from ml.train import fit_bundle, fit_bundle_cv

    config = options.train_config(ModelKind.CLASSIFIER)
    extra = {"n_feedback": training_set.feedback}
    if options.cv_folds > 0:
        # Every image trains the deployed model; the figures come from the cross-validation.
        _, _, metrics = fit_bundle_cv(
            config,
            training_set.records,
            staging,
            kind=ModelKind.CLASSIFIER,
            labels=labels,
            k=options.cv_folds,
            work_dir=work_dir,
            progress=progress,
            extra_metrics=extra,
        )
        return metrics
    split = split_grouped(training_set.records, options.val_fraction, options.test_fraction, options.seed)
    if not split.train:
        raise TrainingError("the split left no training images; add images or lower the validation/test share")
    _, _, metrics = fit_bundle(
        config,
        split,
        staging,
        kind=ModelKind.CLASSIFIER,
        labels=labels,
        work_dir=work_dir,
        progress=progress,
        extra_metrics=extra,
    )
    return metrics


def gate_recipe(options: TrainingOptions) -> Any:  # -> ml.gate.GateRecipe
    """The gate's recipe (ml.gate.GateRecipe's defaults) with the options that apply to it."""
    from ml.gate import GateRecipe

    return GateRecipe(arch=options.arch, crop_size=options.crop_size, seed=options.seed)


def _train_and_register(
    training_set: TrainingSet,
    options: TrainingOptions,
    *,
    kind: str,
    labels: list[str],
    activate: bool,
    progress: bool,
    notes: str,
    reuse_cached: bool,
) -> TrainingOutcome:
    fingerprint = _fingerprint(training_set, kind, options)
    output = models_dir() / "trained" / kind / fingerprint
    output.parent.mkdir(parents=True, exist_ok=True)
    reused = reuse_cached and _cached_bundle(output)
    if reused:
        logger.info("reusing the bundle trained earlier on the same images and options: %s", output)
    else:
        _fit(training_set, options, kind=kind, labels=labels, output=output, progress=progress)
    try:
        model_version = model_version_register(output, notes=notes)
        if activate:
            model_version = model_version_activate(model_version)
    except RegistryError as exc:
        raise TrainingError(str(exc)) from exc
    return TrainingOutcome(model_version, training_set, dict(model_version.metrics), reused)


def classifier_train(
    options: TrainingOptions,
    *,
    activate: bool = False,
    progress: bool = False,
    notes: str = "",
    reuse_cached: bool = True,
) -> TrainingOutcome:
    """Train a car model classifier on the catalog's exterior images and register it (optionally activate).

    Labels are 'Make Model' (label level "model") or catalog labels (level "model-year"). A run on the
    same images with the same options reuses the bundle trained before instead of training again.
    """
    _require_torch()
    images = list(classifier_training_images(options))
    dataset_dir = models_dir() / "datasets" / f"classifier-{uuid.uuid4().hex[:12]}"
    training_set = build_training_set(
        images,
        lambda image: car_image_label(image, options.label_level),
        dataset_dir=dataset_dir,
        min_images_per_class=options.min_images_per_class,
        dedup_distance=options.dedup_distance,
    )
    training_set = _settle_dataset_dir(training_set, "classifier")
    if len(training_set.labels) < 2:
        raise TrainingError(
            f"Need at least 2 classes with {options.min_images_per_class}+ exterior images; found "
            f"{len(training_set.labels)} ({len(images)} exterior images"
            + (f", dropped: {_describe(training_set.dropped)}" if training_set.dropped else "")
            + "). Import photos (import_photos) and label their views (label_views) first."
        )
    default_notes = f"{len(training_set.labels)} classes ({options.label_level}), {len(training_set.records)} images"
    if training_set.dropped:
        default_notes += f"; dropped under {options.min_images_per_class} images: {_describe(training_set.dropped)}"
    return _train_and_register(
        training_set,
        options,
        kind=ModelKind.CLASSIFIER,
        labels=training_set.labels,
        activate=activate,
        progress=progress,
        notes=notes or default_notes,
        reuse_cached=reuse_cached,
    )


def gate_train(
    options: TrainingOptions,
    *,
    activate: bool = False,
    progress: bool = False,
    notes: str = "",
    reuse_cached: bool = True,
) -> TrainingOutcome:
    """Train the 3-class gate (exterior / interior / other) on catalog images whose view is known."""
    _require_torch()
    queryset = CarImage.objects.filter(view__in=GATE_LABELS).select_related("car_model__manufacturer")
    if options.image_ids is not None:
        queryset = queryset.filter(pk__in=options.image_ids)
    dataset_dir = models_dir() / "datasets" / f"gate-{uuid.uuid4().hex[:12]}"
    training_set = build_training_set(
        list(queryset),
        lambda image: image.view,
        dataset_dir=dataset_dir,
        min_images_per_class=options.min_images_per_class,
        dedup_distance=options.dedup_distance,
    )
    training_set = _settle_dataset_dir(training_set, "gate")
    missing = [label for label in GATE_LABELS if label not in training_set.labels]
    if missing:
        raise TrainingError(
            f"The gate needs {options.min_images_per_class}+ images of every view; too few for: "
            f"{', '.join(missing)} (have {_describe(training_set.counts) or 'none'}). "
            "Use `train_gate --zero-shot` until then."
        )
    return _train_and_register(
        training_set,
        options,
        kind=ModelKind.GATE,
        labels=list(GATE_LABELS),
        activate=activate,
        progress=progress,
        notes=notes or f"trained gate on {_describe(training_set.counts)}",
        reuse_cached=reuse_cached,
    )


def _settle_dataset_dir(training_set: TrainingSet, prefix: str) -> TrainingSet:
    """Move the freshly written dataset to a folder named by its content, so identical sets share it."""
    current = training_set.manifest_path.parent
    final = current.parent / f"{prefix}-{training_set.content_hash[:16]}"
    # An earlier run on the same photos left the same set: this fresh one replaces it.
    shutil.rmtree(final, ignore_errors=True)
    current.rename(final)
    from ml.data import ManifestRecord

    records = [ManifestRecord(final / r.path.relative_to(current), r.label, r.group) for r in training_set.records]
    return TrainingSet(
        records=records,
        labels=training_set.labels,
        counts=training_set.counts,
        dropped=training_set.dropped,
        manifest_path=final / "manifest.csv",
        content_hash=training_set.content_hash,
        feedback=training_set.feedback,
    )


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} ({n})" for label, n in counts.items())


def gate_build_zero_shot(*, arch: str = GATE_ARCH, activate: bool = False) -> ModelVersion:
    """Build the zero-shot gate from the offline ImageNet weights and register it (optionally activate)."""
    _require_torch()
    from ml.gate import build_zero_shot_gate
    from ml.models import PretrainedWeightsUnavailable

    work = models_dir() / "trained" / "gate" / f".zero-shot-{uuid.uuid4().hex[:8]}"
    try:
        build_zero_shot_gate(work, arch=arch)
        model_version = model_version_register(work, notes=f"zero-shot gate from ImageNet classes ({arch})")
    except PretrainedWeightsUnavailable as exc:
        raise TrainingError(str(exc)) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return model_version_activate(model_version) if activate else model_version


# ---------------------------------------------------------------- evaluation


@dataclass
class EvaluationOutcome:
    metrics: dict[str, Any]
    report_dir: Path
    evaluated: int
    skipped: dict[str, int]

    @property
    def report_markdown(self) -> str:
        path = self.report_dir / "report.md"
        return path.read_text(encoding="utf-8") if path.is_file() else ""


def model_version_evaluate(
    model_version: ModelVersion, *, manifest: Path | None = None, out_dir: Path | None = None
) -> EvaluationOutcome:
    """Score a registered version on a manifest (default: its own held-out test split) and write a report.

    Records whose label the model does not know, or whose file is gone, are skipped and counted.
    """
    _require_torch()
    from ml.bundle import load_bundle
    from ml.data import read_manifest

    bundle_dir = model_version_bundle_dir(model_version)
    bundle = load_bundle(bundle_dir)
    if manifest is not None:
        try:
            records = read_manifest(manifest)
        except (OSError, KeyError, UnicodeDecodeError) as exc:
            raise TrainingError(f"Cannot read the manifest {manifest}: {exc}") from exc
    else:
        split = bundle.split()
        records = (split.test or split.val) if split else []
        if not records:
            raise TrainingError(f"{model_version} has no held-out split in its bundle; pass --manifest")
    known = set(bundle.labels)
    skipped: Counter = Counter()
    usable = []
    for record in records:
        if record.label not in known:
            skipped[f"unknown label {record.label!r}"] += 1
        elif not Path(record.path).is_file():
            skipped["file missing"] += 1
        else:
            usable.append(record)
    if not usable:
        raise TrainingError(f"Nothing to evaluate: {dict(skipped) or 'no records'}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report_dir = out_dir or models_dir() / "evaluations" / f"{model_version.kind}-{model_version.version}-{stamp}"
    report_dir.mkdir(parents=True, exist_ok=True)
    if bundle.mode == "softmax":
        from ml.evaluate import evaluate_bundle

        metrics = evaluate_bundle(bundle_dir, usable, report_dir)
    else:
        metrics = _evaluate_with_predictor(bundle_dir, usable, bundle.labels, report_dir)
    return EvaluationOutcome(metrics=metrics, report_dir=report_dir, evaluated=len(usable), skipped=dict(skipped))


def _evaluate_with_predictor(bundle_dir: Path, records: list[Any], labels: list[str], report_dir: Path) -> dict:
    """Scores for bundles whose outputs are not the labels (the zero-shot gate's ImageNet groups)."""
    import numpy as np
    import torch

    from ml.evaluate import evaluate_predictions
    from ml.predict import Predictor

    predictor = Predictor.from_bundle(bundle_dir, device="cpu")
    probabilities = torch.from_numpy(
        np.concatenate(
            [predictor.probabilities([r.path for r in records[i : i + 32]]) for i in range(0, len(records), 32)]
        )
    )
    targets = torch.tensor([labels.index(r.label) for r in records])
    return evaluate_predictions(probabilities.clamp_min(1e-12).log(), targets, labels, report_dir)
