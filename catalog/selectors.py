"""Reads from the catalog, shaped for pages, the API and the classifier."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Abs

from catalog.models import CarImage, CarModel, ImageView, Manufacturer, Specification

# What ``slugify`` makes; its all-digit values are ids.
ID_OR_SLUG_PATTERN = r"[-a-zA-Z0-9_]+"


def id_or_slug_filter(value: str, prefix: str = "") -> Q | None:
    """The filter for a numeric id or a slug, or None when ``value`` can be neither.

    Only ASCII digits make an id (``"²".isdigit()`` is true, yet ``int("²")`` fails), and text that
    no slug has (NUL, which PostgreSQL refuses, among it) never reaches the database.
    """
    if not re.fullmatch(ID_OR_SLUG_PATTERN, value):
        return None
    field = f"{prefix}__" if prefix else ""
    return Q(**{f"{field}pk": int(value)}) if value.isdigit() else Q(**{f"{field}slug": value})


def manufacturer_list() -> QuerySet[Manufacturer]:
    return Manufacturer.objects.annotate(model_count=Count("car_models", distinct=True)).order_by("name")


def car_model_list(*, manufacturer: Manufacturer | None = None, year: int | None = None) -> QuerySet[CarModel]:
    queryset = (
        CarModel.objects.select_related("manufacturer", "specs")
        .annotate(
            image_count=Count("images", distinct=True),
            exterior_count=Count("images", filter=Q(images__view=ImageView.EXTERIOR), distinct=True),
            interior_count=Count("images", filter=Q(images__view=ImageView.INTERIOR), distinct=True),
            has_specs=Exists(Specification.objects.filter(car_model=OuterRef("pk"))),
        )
        .order_by("manufacturer__name", "name", "-year")
    )
    if manufacturer is not None:
        queryset = queryset.filter(manufacturer=manufacturer)
    if year is not None:
        queryset = queryset.filter(year=year)
    return queryset


def car_model_detail_queryset() -> QuerySet[CarModel]:
    return CarModel.objects.select_related("manufacturer", "specs").prefetch_related(
        Prefetch("images", queryset=CarImage.objects.order_by("id"))
    )


def car_model_get(*, slug: str | None = None, pk: int | None = None) -> CarModel:
    queryset = car_model_detail_queryset()
    if slug is not None:
        return queryset.get(slug=slug)
    if pk is None:
        raise ValueError("car_model_get needs a slug or a pk")
    return queryset.get(pk=pk)


def car_model_gallery(car_model: CarModel, *, view: str, limit: int = 12) -> list[CarImage]:
    """Images of ``car_model`` in ``view``; when it has none, those of the same model line from the nearest
    model years (ties: the newer year). Each image's own car model says which year it shows."""
    own = list(
        CarImage.objects.filter(car_model=car_model, view=view).select_related("car_model").order_by("id")[:limit]
    )
    if own:
        return own
    return list(
        CarImage.objects.filter(_same_line(car_model, "car_model__"), view=view)
        .select_related("car_model")
        .annotate(year_distance=Abs(F("car_model__year") - car_model.year))
        .order_by("year_distance", "-car_model__year", "id")[:limit]
    )


def car_model_line_years(car_model: CarModel) -> list[CarModel]:
    """Every model year of ``car_model``'s model line (itself included), newest first."""
    return list(
        CarModel.objects.filter(_same_line(car_model)).select_related("manufacturer", "specs").order_by("-year")
    )


def _same_line(car_model: CarModel, prefix: str = "") -> Q:
    """The car models (or, with ``prefix``, the rows of a related car model) of ``car_model``'s model line."""
    return Q(**{f"{prefix}manufacturer_id": car_model.manufacturer_id, f"{prefix}name__iexact": car_model.name})


def car_model_years() -> list[int]:
    return list(CarModel.objects.order_by("-year").values_list("year", flat=True).distinct())


def car_model_by_label(label: str) -> CarModel | None:
    return CarModel.objects.select_related("manufacturer").filter(label=label).first()


def manufacturer_get(*, slug: str) -> Manufacturer:
    return Manufacturer.objects.get(slug=slug)


def manufacturer_list_with_models() -> QuerySet[Manufacturer]:
    """Manufacturers that have car models, for the catalog's browse page."""
    return manufacturer_list().filter(model_count__gt=0)  # type: ignore[misc]  # manufacturer_list's annotation


@dataclass(frozen=True)
class SupportedModels:
    """The car models a page lists as recognisable, grouped by manufacturer name."""

    groups: list[tuple[Manufacturer, list[CarModel]]]
    from_classifier: bool

    @property
    def count(self) -> int:
        return sum(len(models) for _, models in self.groups)


def supported_models_for_page(recognised_ids: Iterable[int]) -> SupportedModels:
    """The car models a classifier can recognise (their ids), grouped by manufacturer; every catalog
    model when it names none (``from_classifier`` is then False)."""
    pks = list(recognised_ids)
    from_classifier = bool(pks)
    if not from_classifier:
        pks = list(CarModel.objects.values_list("pk", flat=True))
    ordered = car_model_list().filter(pk__in=pks).order_by("manufacturer__name", "name", "-year")
    groups: dict[int, tuple[Manufacturer, list[CarModel]]] = {}
    for car_model in ordered:
        groups.setdefault(car_model.manufacturer_id, (car_model.manufacturer, []))[1].append(car_model)
    return SupportedModels(groups=list(groups.values()), from_classifier=from_classifier)
