"""Writes to the model registry: register bundles, map their labels to the catalog, activate them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Value
from django.db.models.functions import Concat, Lower
from django.utils import timezone

from catalog.models import CarModel, Specification
from classifier.models import ModelKind, ModelVersion, ModelVersionLabel
from ml.bundle import file_sha256

logger = logging.getLogger(__name__)


class RegistryError(Exception):
    """A bundle or model version that cannot be registered or activated; the message says why."""


def models_dir() -> Path:
    """This host's model folder: the bundles it fetched from the media storage, training runs, compiled graphs."""
    return Path(settings.CARSITE_MODELS_DIR)


# Registered bundles live in the media storage (STORAGES["default"]), shared by every host.
BUNDLE_STORAGE_PREFIX = "model-bundles"
# Stored after every other file of a bundle and listing them: a bundle stored without it is incomplete.
STORED_MANIFEST = "stored-files.json"


def bundle_storage_dir(kind: str, version: str) -> str:
    """The folder of the media storage that holds the bundle of (kind, version)."""
    return f"{BUNDLE_STORAGE_PREFIX}/{kind}/{version}"


def bundle_cache_dir(kind: str, version: str) -> Path:
    """This host's copy of the bundle of (kind, version); only ever a complete, verified one."""
    return models_dir() / kind / version


def model_version_bundle_dir(model_version: ModelVersion) -> Path:
    """The local bundle directory of a registered version, fetched from the media storage on first use.

    When the bundle cannot be fetched, the cause is logged and the (missing) local path is returned all
    the same: loading from it then fails with an error that names it, as with any unusable bundle.
    """
    try:
        return _fetched_bundle_dir(model_version)
    except RegistryError as exc:
        logger.warning("cannot fetch the bundle of %s: %s", model_version, exc)
        return bundle_cache_dir(model_version.kind, model_version.version)


def _fetched_bundle_dir(model_version: ModelVersion) -> Path:
    legacy = Path(model_version.bundle_path)
    if legacy.is_absolute() and legacy.is_dir():
        return legacy  # registered before bundles went into the media storage, from outside CARSITE_MODELS_DIR
    cached = bundle_cache_dir(model_version.kind, model_version.version)
    if not cached.is_dir():
        _fetch_bundle(model_version.kind, model_version.version)
    return cached


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


@contextlib.contextmanager
def _media_storage_errors(doing: str):
    """The storage unreachable, refusing or losing files: a RegistryError that says what was being done."""
    try:
        yield
    except RegistryError:
        raise
    except Exception as exc:  # botocore's, OSError, ...: whatever the configured backend raises
        raise RegistryError(f"cannot {doing}: {type(exc).__name__}: {exc}") from exc


def _storage_put(name: str, content) -> None:
    default_storage.delete(name)  # an older copy: left by an interrupted store, or a manifest being replaced
    saved = default_storage.save(name, File(content))
    if saved != name:
        # Another process stored this file meanwhile; the manifest's checksums tell whose copy is read.
        default_storage.delete(saved)


def _copy_bundle_into_store(source: Path, kind: str, version: str) -> None:
    """Store every file of the bundle folder in the media storage, then the manifest that lists them.

    A bundle stored before keeps its files; only those it lacks (an export made since) are added, and
    its manifest is replaced by one listing them too.
    """
    prefix = bundle_storage_dir(kind, version)
    stored = _stored_files(prefix) or {}
    files = dict(stored)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        if relative in stored or not path.is_file() or any(part.startswith(".") for part in relative.split("/")):
            continue
        files[relative] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
        with path.open("rb") as handle:
            _storage_put(f"{prefix}/{relative}", handle)
    if files == stored:
        return
    manifest = {"kind": kind, "version": version, "files": files}
    _storage_put(f"{prefix}/{STORED_MANIFEST}", ContentFile(json.dumps(manifest, indent=2, sort_keys=True).encode()))
    logger.info("stored %d files of the bundle of %s %s in the media storage", len(files) - len(stored), kind, version)


def _stored_files(prefix: str) -> dict | None:
    """What the stored manifest lists: {file: {size, sha256}}; None when the bundle is not (fully) stored."""
    name = f"{prefix}/{STORED_MANIFEST}"
    if not default_storage.exists(name):
        return None
    with default_storage.open(name, "rb") as handle:
        manifest = json.loads(handle.read())
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise RegistryError(f"{name} lists no files")
    for relative in files:
        if relative.startswith("/") or ".." in relative.split("/"):
            raise RegistryError(f"{name} names a file outside the bundle: {relative!r}")
    return files


def _fetch_bundle(kind: str, version: str) -> Path:
    """Download a stored bundle into this host's cache: into a temporary folder, verified, then renamed."""
    prefix = bundle_storage_dir(kind, version)
    target = bundle_cache_dir(kind, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        with _media_storage_errors(f"fetch {prefix} from the media storage"):
            files = _stored_files(prefix)
            if files is None:
                raise RegistryError(
                    f"{prefix} is not in the media storage, or only partly ({STORED_MANIFEST} is missing)"
                )
            for relative, expected in files.items():
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with default_storage.open(f"{prefix}/{relative}", "rb") as source, destination.open("wb") as out:
                    for chunk in iter(lambda: source.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != expected.get("sha256"):
                    raise RegistryError(f"{prefix}/{relative} does not match the checksum in its {STORED_MANIFEST}")
        bundle = _load_bundle(staging)
        if (bundle.kind, bundle.version) != (kind, version):
            raise RegistryError(f"{prefix} holds the bundle of {bundle.kind} {bundle.version}")
        # A rename refused means another thread or process of this host fetched it first, verified too.
        with contextlib.suppress(OSError):
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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

    The export is made in this host's copy and stored beside the bundle's other files. Returns the export
    (None when it could not be made: the log says why). Needs torch (``ml.require_torch``).
    """
    from ml.export import ensure_onnx_export

    bundle = _load_bundle(model_version_bundle_dir(model_version))
    exported = ensure_onnx_export(bundle.path)
    if exported is not None:
        with _media_storage_errors(f"store the export of {bundle.kind} {bundle.version} in the media storage"):
            _copy_bundle_into_store(bundle.path, bundle.kind, bundle.version)
    return exported


def model_version_refresh_labels(model_version: ModelVersion) -> ModelVersion:
    """Map labels that had no catalog car model yet (the catalog may have grown since registration)."""
    with transaction.atomic():
        _link_labels(model_version)
    return model_version


def model_version_register(bundle_path: str | Path, *, notes: str = "") -> ModelVersion:
    """Register the bundle at ``bundle_path``; registering the same bundle again returns the same version.

    The bundle is verified (content hash), exported to ONNX in its own directory (when torch is installed)
    and stored in the media storage under model-bundles/<kind>/<version>/ (only the files not stored yet,
    e.g. an export made since), where every host's workers fetch it from; what is stored is fetched back
    into this host's cache and verified too. Each output label is mapped to the catalog car model it names.
    """
    source = Path(bundle_path)
    bundle = _load_bundle(source)
    if bundle.kind not in ModelKind.values:
        raise RegistryError(f"{source}: unknown bundle kind {bundle.kind!r}")
    stored = bundle_storage_dir(bundle.kind, bundle.version)
    _export_onnx(source)
    with _media_storage_errors(f"store {stored} in the media storage"):
        _copy_bundle_into_store(source, bundle.kind, bundle.version)
    if not bundle_cache_dir(bundle.kind, bundle.version).is_dir():
        _fetch_bundle(bundle.kind, bundle.version)

    existing = ModelVersion.objects.filter(kind=bundle.kind, version=bundle.version).first()
    if existing is not None:
        if existing.bundle_path != stored:  # registered when bundles were kept on one host's disk only
            ModelVersion.objects.filter(pk=existing.pk).update(bundle_path=stored)
            existing.bundle_path = stored
        return model_version_refresh_labels(existing)
    try:
        with transaction.atomic():
            model_version = ModelVersion.objects.create(
                kind=bundle.kind,
                version=bundle.version,
                architecture=bundle.arch,
                bundle_path=stored,
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
    _load_bundle(_fetched_bundle_dir(model_version))  # never activate a bundle that is gone or corrupt
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
