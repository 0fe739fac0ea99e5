"""Query filters of the catalog API."""

import django_filters
from django.db.models import Q, QuerySet
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request

from catalog.models import BodyStyle, CarImage, CarModel, ImageView


def _by_id_or_slug(prefix: str, value: str) -> Q:
    value = value.strip()
    return Q(**{f"{prefix}__pk": int(value)}) if value.isdigit() else Q(**{f"{prefix}__slug": value})


class CarModelFilter(django_filters.FilterSet):
    manufacturer = django_filters.CharFilter(method="filter_manufacturer", help_text="Manufacturer id or slug.")
    year = django_filters.NumberFilter(field_name="year")
    model = django_filters.CharFilter(
        field_name="name", lookup_expr="iexact", help_text="Model line, e.g. MDX: every model year of it."
    )
    body_style = django_filters.ChoiceFilter(field_name="body_style", choices=BodyStyle.choices)
    msrp_min = django_filters.NumberFilter(field_name="msrp_usd", lookup_expr="gte", help_text="Lowest MSRP (USD).")
    msrp_max = django_filters.NumberFilter(field_name="msrp_usd", lookup_expr="lte", help_text="Highest MSRP (USD).")
    has_images = django_filters.BooleanFilter(
        method="filter_has_images", help_text="Only models with (or without) images."
    )
    has_specs = django_filters.BooleanFilter(field_name="has_specs", help_text="Only models with (or without) specs.")

    class Meta:
        model = CarModel
        fields = ["manufacturer", "year", "model", "body_style", "msrp_min", "msrp_max", "has_images", "has_specs"]

    def filter_manufacturer(self, queryset: QuerySet[CarModel], name: str, value: str) -> QuerySet[CarModel]:
        return queryset.filter(_by_id_or_slug("manufacturer", value)) if value else queryset

    def filter_has_images(self, queryset: QuerySet[CarModel], name: str, value: bool | None) -> QuerySet[CarModel]:
        if value is None:
            return queryset
        return queryset.filter(image_count__gt=0) if value else queryset.filter(image_count=0)


class CarImageFilter(django_filters.FilterSet):
    car_model = django_filters.CharFilter(method="filter_car_model", help_text="Car model id or slug.")
    view = django_filters.ChoiceFilter(field_name="view", choices=ImageView.choices)

    class Meta:
        model = CarImage
        fields = ["car_model", "view"]

    def filter_car_model(self, queryset: QuerySet[CarImage], name: str, value: str) -> QuerySet[CarImage]:
        return queryset.filter(_by_id_or_slug("car_model", value)) if value else queryset


class AliasOrderingFilter(OrderingFilter):
    """OrderingFilter whose public field names may stand for a lookup (``manufacturer`` → its name)."""

    def get_ordering(self, request: Request, queryset: QuerySet, view: object) -> list[str] | None:
        ordering = super().get_ordering(request, queryset, view)
        aliases: dict[str, str] = getattr(view, "ordering_aliases", {})
        if not ordering:
            return ordering
        translated = []
        for term in ordering:
            descending = term.startswith("-")
            field = aliases.get(term.lstrip("-"), term.lstrip("-"))
            translated.append(f"-{field}" if descending else field)
        # A stable tiebreaker so page boundaries never shuffle.
        return [*translated, "pk"]
