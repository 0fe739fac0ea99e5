"""Labelled photos into the catalog (``import_photos``) and gate-labelled views (``label_views``).

Photo folders come in three shapes, tried in this order for every image file:

1. a ``manifest.csv`` in the folder or its parent with ``file, make, model, year, view, subject``
   columns (the shared car-photos set): rows with ``subject=other-car`` show a rival car and are skipped;
2. a ``<label>/`` sub-folder named like a catalog label ('2023 Audi A4');
3. The Car Connection file names ``Make_Model_Year_…_xyz.jpg`` ('Alfa Romeo_4C Spider_2020_…').
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from catalog import imaging, services
from catalog.models import CarImage, CarModel, ImageOrigin, ImageView
from catalog.naming import CarName, LabelError, official_make, parse_label
from catalog.spec_import import SpecImportResult, specs_from_file_names
from classifier.models import ModelKind
from ml.imaging import to_rgb

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("file", "make", "model", "year")
SUBJECT_OTHER_CAR = "other-car"
OUTCOMES = ("imported", "duplicate", "skipped", "rejected")


class PhotoImportError(Exception):
    """The folder cannot be imported at all (missing, unreadable manifest); nothing was written."""


@dataclass(frozen=True)
class PhotoSource:
    """One image file and what it shows, before it is imported."""

    path: Path
    make: str = ""
    model: str = ""
    year: int | None = None
    view: str = ""
    skip_reason: str = ""
    error: str = ""


@dataclass
class PhotoImportItem:
    path: Path
    outcome: str  # one of OUTCOMES
    reason: str = ""
    label: str = ""
    image_id: int | None = None


@dataclass
class PhotoImportResult:
    directory: Path
    items: list[PhotoImportItem] = field(default_factory=list)
    car_models_created: list[str] = field(default_factory=list)
    specs_from_names: SpecImportResult | None = None

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(item.outcome for item in self.items)
        return {outcome: counter.get(outcome, 0) for outcome in OUTCOMES}

    def with_outcome(self, outcome: str) -> list[PhotoImportItem]:
        return [item for item in self.items if item.outcome == outcome]

    @property
    def image_ids(self) -> list[int]:
        """Catalog images holding these photos: the imported ones and those they duplicated."""
        return sorted({item.image_id for item in self.items if item.image_id is not None})


# ---------------------------------------------------------------- reading a folder


def parse_tcc_filename(name: str) -> tuple[str, str, int] | None:
    """(make, model, year) from a The Car Connection file name, or None if it does not follow the scheme."""
    parts = Path(name).stem.split("_")
    if len(parts) < 3:
        return None
    make, model, year = (" ".join(p.split()) for p in parts[:3])
    if not make or not model or not (year.isdigit() and len(year) == 4):
        return None
    return official_make(make), model, int(year)


def find_manifest(directory: Path) -> Path | None:
    for candidate in (directory / MANIFEST_NAME, directory.parent / MANIFEST_NAME):
        if candidate.is_file():
            return candidate
    return None


def read_photo_manifest(manifest: Path) -> dict[str, dict[str, str]]:
    """File name -> manifest row; raises PhotoImportError when the columns are not there."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PhotoImportError(f"{manifest} lacks the column(s) {', '.join(missing)}")
            return {Path(row["file"].strip()).name: row for row in reader if (row.get("file") or "").strip()}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PhotoImportError(f"Cannot read {manifest}: {exc}") from exc


def _source_from_manifest(path: Path, row: dict[str, str], view_from_manifest: bool) -> PhotoSource:
    subject = (row.get("subject") or "").strip().lower()
    if subject == SUBJECT_OTHER_CAR:
        return PhotoSource(path, skip_reason="the manifest says it shows another car (subject=other-car)")
    year_text = (row.get("year") or "").strip()
    if not year_text.isdigit():
        return PhotoSource(path, error=f"the manifest gives no valid year ({year_text!r})")
    view = (row.get("view") or "").strip().lower() if view_from_manifest else ""
    if view and view not in ImageView.values:
        return PhotoSource(path, error=f"the manifest gives an unknown view {view!r}")
    return PhotoSource(
        path,
        make=official_make(row.get("make") or ""),
        model=" ".join((row.get("model") or "").split()),
        year=int(year_text),
        view=view,
    )


def _source_from_name(path: Path, root: Path) -> PhotoSource:
    if path.parent != root:
        try:
            name = parse_label(path.parent.name)
            return PhotoSource(path, make=name.make, model=name.model, year=name.year)
        except LabelError:
            pass  # not a label folder: try the file name
    parsed = parse_tcc_filename(path.name)
    if parsed is None:
        return PhotoSource(
            path,
            error="cannot tell which car it shows: not in a manifest, not in a '<year> <make> <model>' folder "
            "and not named 'Make_Model_Year_….jpg'",
        )
    make, model, year = parsed
    return PhotoSource(path, make=make, model=model, year=year)


def photo_sources(directory: Path, *, view_from_manifest: bool = False) -> list[PhotoSource]:
    """Every image file under ``directory`` with what it shows, in a stable order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PhotoImportError(f"{directory} is not a folder")
    manifest = find_manifest(directory)
    rows = read_photo_manifest(manifest) if manifest else {}
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    sources = []
    for path in files:
        row = rows.get(path.name)
        sources.append(
            _source_from_manifest(path, row, view_from_manifest) if row else _source_from_name(path, directory)
        )
    return sources


# ---------------------------------------------------------------- importing


def _target_car_names(sources: Iterable[PhotoSource], year_as_label: bool) -> dict[tuple[str, str], CarName]:
    """Without ``year_as_label`` all photos of one make and model go to one car model: the newest in the
    catalog, or else the newest model year among the photos (decided up front, so order does not matter)."""
    targets: dict[tuple[str, str], CarName] = {}
    if year_as_label:
        return targets
    newest: dict[tuple[str, str], PhotoSource] = {}
    for source in sources:
        if source.year is not None and not source.error and not source.skip_reason:
            key = (source.make.lower(), source.model.lower())
            if key not in newest or (source.year, str(source.path)) > (newest[key].year, str(newest[key].path)):
                newest[key] = source
    for key, source in newest.items():
        catalog_newest = (
            CarModel.objects.filter(manufacturer__name__iexact=source.make, name__iexact=source.model)
            .select_related("manufacturer")
            .order_by("-year")
            .first()
        )
        if catalog_newest is not None:
            targets[key] = CarName(catalog_newest.manufacturer.name, catalog_newest.name, catalog_newest.year)
        else:
            assert source.year is not None
            targets[key] = CarName(source.make, source.model, source.year)
    return targets


def photos_import(
    directory: str | Path,
    *,
    view_from_manifest: bool = False,
    year_as_label: bool = False,
    near_duplicate_distance: int | None = None,
) -> PhotoImportResult:
    """Import the labelled photos under ``directory`` into the catalog as origin=imported images.

    Each photo goes to the car model of its make, model and year with ``year_as_label``; otherwise to
    the newest catalog car model of its make and model. Missing car models and manufacturers are
    created. Safe to run again: copies and near-copies of stored images are reported as duplicates
    (near-copies within ``near_duplicate_distance``, default CARSITE_NEAR_DUPLICATE_DISTANCE; 0 keeps
    them, as training wants: it groups near-duplicates into one fold rather than losing them).
    A photo is imported in its own transaction, so a rejected file never leaves a car model behind.
    """
    directory = Path(directory)
    result = PhotoImportResult(directory=directory)
    sources = photo_sources(directory, view_from_manifest=view_from_manifest)
    targets = _target_car_names(sources, year_as_label)
    for source in sources:
        if source.skip_reason:
            result.items.append(PhotoImportItem(source.path, "skipped", source.skip_reason))
            continue
        if source.error:
            result.items.append(PhotoImportItem(source.path, "rejected", source.error))
            continue
        assert source.year is not None
        name = targets.get((source.make.lower(), source.model.lower())) or CarName(
            source.make, source.model, source.year
        )
        result.items.append(_import_one(source, name, result, near_duplicate_distance))
    # Car models without a spec sheet get the rough figures the photos' names carry.
    stored = [item.path.name for item in result.items if item.image_id is not None]
    result.specs_from_names = specs_from_file_names(stored)
    logger.info("photo import from %s: %s", directory, result.counts)
    return result


def _import_one(
    source: PhotoSource, name: CarName, result: PhotoImportResult, near_duplicate_distance: int | None
) -> PhotoImportItem:
    try:
        data = source.path.read_bytes()
    except OSError as exc:
        return PhotoImportItem(source.path, "rejected", f"cannot read the file: {exc}")
    try:
        with transaction.atomic():
            car_model, created = services.car_model_get_or_create(make=name.make, model=name.model, year=name.year)
            added = services.car_image_add(
                car_model,
                data=data,
                origin=ImageOrigin.IMPORTED,
                view=source.view or ImageView.UNKNOWN,
                view_confidence=1.0 if source.view else None,
                near_duplicate_distance=near_duplicate_distance,
            )
    except imaging.ImageRejected as exc:
        return PhotoImportItem(source.path, "rejected", str(exc), label=name.label)
    except Exception as exc:  # a bad name (validation) or database error: report it, keep going
        logger.warning("could not import %s: %s", source.path, exc)
        return PhotoImportItem(source.path, "rejected", f"{type(exc).__name__}: {exc}", label=name.label)
    if created:
        result.car_models_created.append(car_model.label)
    if added.saved:
        assert added.image is not None
        return PhotoImportItem(source.path, "imported", label=car_model.label, image_id=added.image.pk)
    assert added.duplicate_of is not None
    reason = "same image already stored" if added.status == "duplicate" else "near-duplicate of a stored image"
    return PhotoImportItem(
        source.path,
        "duplicate",
        f"{reason} (#{added.duplicate_of.pk})",
        label=car_model.label,
        image_id=added.duplicate_of.pk,
    )


# ---------------------------------------------------------------- views from the gate


class NoActiveGate(Exception):
    """label_views needs an active gate model."""


@dataclass
class LabelViewsResult:
    labelled: int = 0
    missing: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)
    views: Counter = field(default_factory=Counter)


def car_images_label_views(image_ids: Iterable[int], *, batch_size: int = 16) -> LabelViewsResult:
    """Set view and view confidence of these catalog images from the active gate's best label.

    Re-running gives the same result; ids of images deleted meanwhile are reported, not an error.
    """
    from PIL import Image

    from classifier.runtime import get_active_model

    gate = get_active_model(ModelKind.GATE)
    if gate is None:
        raise NoActiveGate("No gate model is active: run `manage.py train_gate --zero-shot --activate` first.")
    ids = sorted({int(i) for i in image_ids})
    images = {image.pk: image for image in CarImage.objects.filter(pk__in=ids)}
    result = LabelViewsResult(missing=[i for i in ids if i not in images])
    pending = [images[i] for i in ids if i in images]
    for start in range(0, len(pending), batch_size):
        batch, pictures = [], []
        for image in pending[start : start + batch_size]:
            try:
                with image.image.open("rb") as handle, Image.open(handle) as picture:
                    pictures.append(to_rgb(picture))
                batch.append(image)
            except (OSError, ValueError) as exc:
                logger.warning("cannot read catalog image #%s: %s", image.pk, exc)
                result.unreadable.append(image.pk)
        if not batch:
            continue
        for image, ranked in zip(batch, gate.predictor.predict(pictures, top_k=1), strict=True):
            best = ranked[0]
            view = best.label if best.label in ImageView.values else ImageView.OTHER
            services.car_image_set_view(image, view=view, confidence=min(max(best.probability, 0.0), 1.0))
            result.labelled += 1
            result.views[view] += 1
    return result
