"""Writes to the model registry: register bundles, map their labels to the catalog, activate them."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Value
from django.db.models.functions import Concat, Lower
from django.utils import timezone

from catalog.models import CarModel, Specification
from classifier.models import ModelKind, ModelVersion, ModelVersionLabel

logger = logging.getLogger(__name__)


class RegistryError(Exception):
    """A bundle or model version that cannot be registered or activated; the message says why."""


def models_dir() -> Path:
    return Path(settings.CARSITE_MODELS_DIR)


def bundle_storage_dir(kind: str, version: str) -> Path:
    """Where the registry keeps the bundle of (kind, version)."""
    return models_dir() / kind / version


def model_version_bundle_dir(model_version: ModelVersion) -> Path:
    """The absolute bundle directory of a registered version (stored relative to CARSITE_MODELS_DIR)."""
    path = Path(model_version.bundle_path)
    return path if path.is_absolute() else models_dir() / path


def _load_bundle(path: Path):  # -> ml.bundle.Bundle; ml is imported lazily to keep Django start-up light
    from ml.bundle import BundleIntegrityError, load_bundle

    try:
        return load_bundle(path)
    except (FileNotFoundError, BundleIntegrityError) as exc:
        raise RegistryError(str(exc)) from exc


def _export_onnx(bundle_dir: Path) -> None:
    """Give the bundle its ONNX export (what workers serve) when torch is here to make one; never fails the
    registration: without an export the bundle is served by torch, and a bundle already exported is left alone."""
    try:
        from ml.export import ensure_onnx_export  # imports torch: a serving install registers without exporting
    except ImportError as exc:
        logger.info("not exporting %s to ONNX: %s", bundle_dir, exc)
        return
    ensure_onnx_export(bundle_dir)


def _copy_bundle_into_store(source: Path, target: Path) -> None:
    """Copy a bundle directory to ``target`` all at once: a crash never leaves a half-copied bundle there."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*"))
    try:
        staging.rename(target)
    except OSError:
        # Another process stored the same version first; theirs is identical by construction.
        shutil.rmtree(staging, ignore_errors=True)


def car_model_for_label(label: str, kind: str) -> CarModel | None:
    """The catalog car model an output label stands for.

    A model-year label ('2023 Acura MDX') names that car model; a make-and-model label ('Acura MDX')
    names the newest catalog year of that model line with specifications (else the newest year): the
    result page shows it first and lets the visitor pick another year. Gate labels name no car.
    """
    if kind != ModelKind.CLASSIFIER:
        return None
    label = " ".join(label.split())
    exact = CarModel.objects.filter(label__iexact=label).first()
    if exact is not None:
        return exact
    return (
        CarModel.objects.annotate(registry_make_model=Lower(Concat("manufacturer__name", Value(" "), "name")))
        .filter(registry_make_model=label.lower())
        .annotate(has_specs=Exists(Specification.objects.filter(car_model=OuterRef("pk"))))
        .order_by("-has_specs", "-year")
        .first()
    )


def _link_labels(model_version: ModelVersion) -> None:
    existing = {link.index: link for link in model_version.label_links.all()}
    for index, label in enumerate(model_version.labels):
        link = existing.get(index)
        if link is None:
            ModelVersionLabel.objects.create(
                model_version=model_version,
                index=index,
                label=label,
                car_model=car_model_for_label(label, model_version.kind),
            )
        elif link.car_model_id is None:
            car_model = car_model_for_label(label, model_version.kind)
            if car_model is not None:
                link.car_model = car_model
                link.save(update_fields=["car_model"])


def model_version_export(model_version: ModelVersion) -> Path | None:
    """Give a registered version's stored bundle its ONNX export (versions registered before exports existed).

    Returns the export (None when it could not be made: the log says why). Needs torch (``ml.require_torch``).
    """
    from ml.export import ensure_onnx_export

    return ensure_onnx_export(_load_bundle(model_version_bundle_dir(model_version)).path)


def model_version_refresh_labels(model_version: ModelVersion) -> ModelVersion:
    """Map labels that had no catalog car model yet (the catalog may have grown since registration)."""
    with transaction.atomic():
        _link_labels(model_version)
    return model_version


def model_version_register(bundle_path: str | Path, *, notes: str = "") -> ModelVersion:
    """Register the bundle at ``bundle_path``; registering the same bundle again returns the same version.

    The bundle is verified (content hash), exported to ONNX in its own directory (when torch is installed),
    copied to CARSITE_MODELS_DIR/<kind>/<version>/ unless it is already there, and each output label is
    mapped to the catalog car model it names. A version stored before exports existed is exported in the store.
    """
    source = Path(bundle_path)
    bundle = _load_bundle(source)
    if bundle.kind not in ModelKind.values:
        raise RegistryError(f"{source}: unknown bundle kind {bundle.kind!r}")
    target = bundle_storage_dir(bundle.kind, bundle.version)
    _export_onnx(source)
    if source.resolve() != target.resolve():
        _copy_bundle_into_store(source, target)
        _export_onnx(target)  # stored by an earlier registration without its export
    _load_bundle(target)  # what is stored must verify too, not only the source

    existing = ModelVersion.objects.filter(kind=bundle.kind, version=bundle.version).first()
    if existing is not None:
        return model_version_refresh_labels(existing)
    stored_path = target.relative_to(models_dir()) if target.is_relative_to(models_dir()) else target
    try:
        with transaction.atomic():
            model_version = ModelVersion.objects.create(
                kind=bundle.kind,
                version=bundle.version,
                architecture=bundle.arch,
                bundle_path=str(stored_path),
                labels=bundle.labels,
                metrics=dict(bundle.meta.get("metrics") or {}),
                notes=notes,
            )
            _link_labels(model_version)
    except IntegrityError:
        # Registered concurrently by another process: same (kind, version), same bundle.
        return ModelVersion.objects.get(kind=bundle.kind, version=bundle.version)
    logger.info("registered %s", model_version)
    return model_version


def model_version_activate(model_version: ModelVersion) -> ModelVersion:
    """Make ``model_version`` the active one of its kind; the previous active one is deactivated."""
    _load_bundle(model_version_bundle_dir(model_version))  # never activate a bundle that is gone or corrupt
    with transaction.atomic():
        # Lock every version of the kind so two concurrent activations are serialised.
        versions = list(ModelVersion.objects.select_for_update().filter(kind=model_version.kind).order_by("pk"))
        target = next((v for v in versions if v.pk == model_version.pk), None)
        if target is None:
            raise RegistryError(f"Model version {model_version.pk} no longer exists.")
        _link_labels(target)
        if target.is_active:
            return target
        ModelVersion.objects.filter(kind=target.kind, is_active=True).exclude(pk=target.pk).update(is_active=False)
        target.is_active = True
        target.activated_at = timezone.now()
        target.save(update_fields=["is_active", "activated_at", "updated_at"])
    logger.info("activated %s", target)
    model_version.is_active, model_version.activated_at = target.is_active, target.activated_at
    return target


def model_version_deactivate(model_version: ModelVersion) -> ModelVersion:
    with transaction.atomic():
        ModelVersion.objects.filter(pk=model_version.pk).update(is_active=False)
    model_version.refresh_from_db()
    return model_version
