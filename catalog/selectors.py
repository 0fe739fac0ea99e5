"""Reads from the catalog, shaped for pages, the API and the classifier."""

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet

from catalog.models import CarImage, CarModel, ImageView, Manufacturer, Specification


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
    return queryset.get(slug=slug) if slug is not None else queryset.get(pk=pk)


def car_model_gallery(car_model: CarModel, *, view: str, limit: int = 12) -> list[CarImage]:
    return list(CarImage.objects.filter(car_model=car_model, view=view).order_by("id")[:limit])


def car_model_years() -> list[int]:
    return list(CarModel.objects.order_by("-year").values_list("year", flat=True).distinct())


def car_model_by_label(label: str) -> CarModel | None:
    return CarModel.objects.select_related("manufacturer").filter(label=label).first()
