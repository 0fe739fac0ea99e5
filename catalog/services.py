"""Writes to the catalog. Views, the API, admin, commands and tasks all call these."""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q

from catalog import imaging
from catalog.models import CarImage, CarModel, ImageOrigin, ImageView, Manufacturer, Specification
from catalog.naming import CarName, car_slug, make_slug, official_make, parse_label
from ml.imaging import hamming

logger = logging.getLogger(__name__)

SPEC_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in Specification._meta.concrete_fields
    if f.name not in {"id", "car_model", "created_at", "updated_at", "raw", "source"}
)


def manufacturer_get_or_create(name: str) -> Manufacturer:
    name = official_make(name)
    if not name:
        raise ValidationError("A manufacturer needs a name.")
    manufacturer = Manufacturer.objects.filter(name__iexact=name).first()
    if manufacturer:
        return manufacturer
    manufacturer = Manufacturer(name=name, slug=make_slug(name))
    manufacturer.full_clean()
    try:
        with transaction.atomic():
            manufacturer.save()
    except IntegrityError:
        # Another worker created it between our read and write.
        return Manufacturer.objects.get(name__iexact=name)
    return manufacturer


def car_model_get_or_create(
    *, make: str, model: str, year: int, defaults: Mapping[str, Any] | None = None
) -> tuple[CarModel, bool]:
    """The car model named (make, model, year), created with ``defaults`` if it is new."""
    model = " ".join(model.split())
    with transaction.atomic():
        manufacturer = manufacturer_get_or_create(make)
        name = CarName(make=manufacturer.name, model=model, year=int(year))
        existing = CarModel.objects.filter(
            Q(label__iexact=name.label) | Q(manufacturer=manufacturer, name__iexact=model, year=name.year)
        ).first()
        if existing:
            return existing, False
        car_model = CarModel(
            manufacturer=manufacturer,
            name=name.model,
            year=name.year,
            label=name.label,
            slug=car_slug(name.label),
            **dict(defaults or {}),
        )
        car_model.full_clean()
        try:
            with transaction.atomic():
                car_model.save()
        except IntegrityError:
            return CarModel.objects.get(label=name.label), False
    return car_model, True


def car_model_get_or_create_from_label(label: str, **kwargs: Any) -> tuple[CarModel, bool]:
    name = parse_label(label)
    return car_model_get_or_create(make=name.make, model=name.model, year=name.year, **kwargs)


def car_model_update(car_model: CarModel, **fields: Any) -> CarModel:
    """Change plain fields of a car model (body style, MSRP, …); validated before saving."""
    for name, value in fields.items():
        setattr(car_model, name, value)
    car_model.full_clean()
    car_model.save()
    return car_model


@dataclass
class CatalogLoadResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


@transaction.atomic
def catalog_load(labels: Iterable[str]) -> CatalogLoadResult:
    """Create the car models named by ``labels`` ('2023 Audi A4'); those already there are left alone."""
    result = CatalogLoadResult()
    seen: set[str] = set()
    for raw_label in labels:
        if not raw_label.strip():
            continue
        name = parse_label(raw_label)
        if name.label in seen:
            continue  # an alias of a label already handled (the original's "ID" for "ID.4")
        seen.add(name.label)
        _, created = car_model_get_or_create(make=name.make, model=name.model, year=name.year)
        (result.created if created else result.existing).append(name.label)
    return result


def specification_upsert(
    car_model: CarModel,
    *,
    values: Mapping[str, Any],
    raw: Mapping[str, Any] | None = None,
    source: str = "",
) -> tuple[Specification, bool]:
    """Set the given typed spec fields (others keep their values); returns (spec, changed).

    Raw source rows are merged into ``raw`` keyed by source so nothing published is lost.
    """
    unknown = set(values) - set(SPEC_FIELDS)
    if unknown:
        raise ValueError(f"Unknown specification fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        spec, created = Specification.objects.select_for_update().get_or_create(car_model=car_model)
        before = {name: getattr(spec, name) for name in SPEC_FIELDS} | {"raw": dict(spec.raw), "source": spec.source}
        for name, value in values.items():
            setattr(spec, name, value)
        if raw is not None:
            spec.raw = {**spec.raw, (source or "source"): dict(raw)}
        if source:
            spec.source = source
        after = {name: getattr(spec, name) for name in SPEC_FIELDS} | {"raw": spec.raw, "source": spec.source}
        changed = created or _normalised(before) != _normalised(after)
        if changed:  # an unchanged row writes nothing, so it skips the validation's query per constraint too
            spec.full_clean()
            spec.save()
    return spec, changed


def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    from decimal import Decimal

    return {k: (Decimal(str(v)) if isinstance(v, float) else v) for k, v in values.items()}


def specification_update(spec: Specification, **values: Any) -> Specification:
    specification_upsert(spec.car_model, values=values)
    spec.refresh_from_db()
    return spec


@dataclass(frozen=True)
class ImageAddResult:
    status: str  # "saved", "duplicate" or "near_duplicate"
    image: CarImage | None
    duplicate_of: CarImage | None = None

    @property
    def saved(self) -> bool:
        return self.status == "saved"


def car_image_add(
    car_model: CarModel,
    *,
    data: bytes,
    origin: str,
    source_url: str = "",
    view: str = ImageView.UNKNOWN,
    view_confidence: float | None = None,
    limits: imaging.ImageLimits | None = None,
    near_duplicate_distance: int | None = None,
) -> ImageAddResult:
    """Validate, normalise and store one image of ``car_model``, skipping duplicates.

    Raises ``imaging.ImageRejected`` for bytes that are not an acceptable image. Exact copies
    (same normalised bytes) and near-duplicates (perceptual hash within the threshold) of an
    image this car model already has are not stored again.
    """
    if origin not in ImageOrigin.values:
        raise ValueError(f"Unknown image origin {origin!r}")
    limits = limits or imaging.limits_from_settings()
    normalised = imaging.normalise(data, limits)
    threshold = settings.CARSITE_NEAR_DUPLICATE_DISTANCE if near_duplicate_distance is None else near_duplicate_distance
    with transaction.atomic():
        # Serialise image writes per car model so two workers cannot both pass the duplicate check.
        CarModel.objects.select_for_update().filter(pk=car_model.pk).first()
        exact = CarImage.objects.filter(car_model=car_model, sha256=normalised.sha256).first()
        if exact:
            return ImageAddResult("duplicate", None, exact)
        if threshold > 0:
            for other in CarImage.objects.filter(car_model=car_model).exclude(phash="").only("id", "phash"):
                if hamming(other.phash, normalised.phash) <= threshold:
                    return ImageAddResult("near_duplicate", None, other)
        image = CarImage(
            car_model=car_model,
            source_url=source_url,
            sha256=normalised.sha256,
            phash=normalised.phash,
            view=view,
            view_confidence=view_confidence,
            origin=origin,
        )
        image.image.save(f"{normalised.sha256[:16]}.jpg", ContentFile(normalised.jpeg), save=False)
        try:
            image.full_clean()
            image.save()
        except Exception:
            # Leave no orphan file behind when the row cannot be written.
            image.image.delete(save=False)
            raise
    return ImageAddResult("saved", image)


def car_image_set_view(image: CarImage, *, view: str, confidence: float | None) -> CarImage:
    if view not in ImageView.values:
        raise ValueError(f"Unknown view {view!r}")
    image.view = view
    image.view_confidence = confidence
    image.full_clean()
    image.save(update_fields=["view", "view_confidence", "updated_at"])
    return image


def car_image_delete(image: CarImage) -> None:
    storage, name = image.image.storage, image.image.name
    image.delete()
    # Delete the file only once the row is really gone.
    if name:
        transaction.on_commit(lambda: storage.delete(name))


def manufacturer_update(manufacturer: Manufacturer, *, name: str) -> Manufacturer:
    """Rename a manufacturer (official spelling); its slug follows the name."""
    manufacturer.name = official_make(name)
    manufacturer.slug = make_slug(manufacturer.name)
    manufacturer.full_clean()
    manufacturer.save()
    return manufacturer


def manufacturer_delete(manufacturer: Manufacturer) -> None:
    """Delete a manufacturer that has no car models; one with models is refused, never cascaded."""
    if manufacturer.car_models.exists():
        raise ValidationError(
            f"{manufacturer.name} still has {manufacturer.car_models.count()} car models; delete or move them first."
        )
    manufacturer.delete()


def car_model_rename(car_model: CarModel, *, name: str | None = None, year: int | None = None) -> CarModel:
    """Change a car model's name or year; its label and slug follow."""
    name = " ".join((name if name is not None else car_model.name).split())
    year = int(year if year is not None else car_model.year)
    label = CarName(make=car_model.manufacturer.name, model=name, year=year).label
    car_model.name, car_model.year, car_model.label, car_model.slug = name, year, label, car_slug(label)
    car_model.full_clean()
    car_model.save()
    return car_model


def car_model_delete(car_model: CarModel) -> None:
    """Delete a car model with its specification and images (files removed once committed).

    A car model that classifier labels or visitor feedback point at is refused, and nothing is deleted.
    """
    from django.db.models import ProtectedError

    with transaction.atomic():
        for image in list(car_model.images.all()):
            car_image_delete(image)
        try:
            car_model.delete()
        except ProtectedError:
            raise ValidationError(
                f"{car_model.label} is used by the classifier or by visitor feedback and cannot be deleted."
            ) from None
