"""Query filters of the catalog API."""

import django_filters
from django import forms
from django.core.validators import RegexValidator
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request

from catalog.models import BodyStyle, CarImage, CarModel, ImageView
from catalog.selectors import ID_OR_SLUG_PATTERN, id_or_slug_filter

# Every filter refuses a value it cannot read (400) instead of ignoring it.


class StrictBooleanField(forms.Field):
    widget = forms.TextInput
    VALUES = {"true": True, "false": False, "1": True, "0": False}

    def to_python(self, value: str | None) -> bool | None:
        if value in (None, ""):
            return None
        try:
            return self.VALUES[value.lower()]
        except KeyError:
            raise forms.ValidationError("Enter true or false.", code="invalid") from None


class BooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _id_or_slug_schema(description: str) -> dict:
    return {"type": "string", "pattern": f"^{ID_OR_SLUG_PATTERN}$", "description": description}


def id_or_slug_char_filter(method: str, help_text: str) -> django_filters.CharFilter:
    return django_filters.CharFilter(
        method=method,
        help_text=help_text,
        validators=[RegexValidator(rf"\A{ID_OR_SLUG_PATTERN}\Z", "Enter a numeric id or a slug.", code="invalid")],
    )


class NoBlankValuesForm(forms.Form):
    """A parameter that is sent needs a value: ``?year=`` is refused, not read as no filter."""

    def clean(self) -> dict:
        cleaned = super().clean()
        for name in self.fields:
            if name in self.data and not str(self.data[name]).strip():
                self.add_error(name, "Enter a value, or leave the parameter out.")
        return cleaned


class FilterSet(django_filters.FilterSet):
    class Meta:
        form = NoBlankValuesForm


class CarModelFilter(FilterSet):
    manufacturer = id_or_slug_char_filter("filter_manufacturer", "Manufacturer id or slug.")
    year = IntegerFilter(field_name="year")
    model = django_filters.CharFilter(method="filter_model", help_text="Model line, e.g. MDX: every model year of it.")
    body_style = django_filters.ChoiceFilter(field_name="body_style", choices=BodyStyle.choices)
    msrp_min = IntegerFilter(field_name="msrp_usd", lookup_expr="gte", help_text="Lowest MSRP (USD).")
    msrp_max = IntegerFilter(field_name="msrp_usd", lookup_expr="lte", help_text="Highest MSRP (USD).")
    has_images = BooleanFilter(method="filter_has_images", help_text="Only models with (or without) images.")
    has_specs = BooleanFilter(field_name="has_specs", help_text="Only models with (or without) specs.")

    class Meta(FilterSet.Meta):
        model = CarModel
        fields = ["manufacturer", "year", "model", "body_style", "msrp_min", "msrp_max", "has_images", "has_specs"]

    @extend_schema_field({"type": "string", "pattern": r"\S", "description": "Model line, e.g. MDX."})
    def filter_model(self, queryset: QuerySet[CarModel], name: str, value: str) -> QuerySet[CarModel]:
        return queryset.filter(name__iexact=value.strip()) if value else queryset

    @extend_schema_field(_id_or_slug_schema("Manufacturer id or slug."))
    def filter_manufacturer(self, queryset: QuerySet[CarModel], name: str, value: str) -> QuerySet[CarModel]:
        return queryset.filter(id_or_slug_filter(value, "manufacturer")) if value else queryset

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_has_images(self, queryset: QuerySet[CarModel], name: str, value: bool | None) -> QuerySet[CarModel]:
        if value is None:
            return queryset
        return queryset.filter(image_count__gt=0) if value else queryset.filter(image_count=0)


class CarImageFilter(FilterSet):
    car_model = id_or_slug_char_filter("filter_car_model", "Car model id or slug.")
    view = django_filters.ChoiceFilter(field_name="view", choices=ImageView.choices)

    class Meta(FilterSet.Meta):
        model = CarImage
        fields = ["car_model", "view"]

    @extend_schema_field(_id_or_slug_schema("Car model id or slug."))
    def filter_car_model(self, queryset: QuerySet[CarImage], name: str, value: str) -> QuerySet[CarImage]:
        return queryset.filter(id_or_slug_filter(value, "car_model")) if value else queryset


class AliasOrderingFilter(OrderingFilter):
    """OrderingFilter whose public field names may stand for a lookup (``manufacturer`` → its name);
    an unknown field is refused (400), not ignored."""

    def remove_invalid_fields(self, queryset: QuerySet, fields: list[str], view: object, request: Request) -> list[str]:
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        invalid = [term for term in fields if term and term not in valid]
        if invalid:
            allowed = ", ".join(name for name, _ in self.get_valid_fields(queryset, view, {"request": request}))
            raise ValidationError({self.ordering_param: [f"Unknown ordering {', '.join(invalid)}; use {allowed}."]})
        return valid

    def get_schema_operation_parameters(self, view: object) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        enum = [term for name in getattr(view, "ordering_fields", []) for term in (name, f"-{name}")]
        for parameter in parameters:
            parameter["description"] += " One of the listed terms, or several separated by commas."
            parameter["schema"] = {"type": "string", "enum": enum}
        return parameters

    def get_ordering(self, request: Request, queryset: QuerySet, view: object) -> list[str] | None:
        if self.ordering_param in request.query_params and not request.query_params[self.ordering_param].strip():
            raise ValidationError({self.ordering_param: ["Enter a value, or leave the parameter out."]})
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
