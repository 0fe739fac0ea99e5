"""API representations of the catalog. Reads come from selectors; writes are validated here and
carried out by ``catalog.services`` in the viewsets."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from catalog import imaging
from catalog.models import BodyStyle, CarImage, CarModel, ImageView, Manufacturer, Specification
from catalog.services import SPEC_FIELDS


class ManufacturerSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Manufacturer
        fields = ["id", "name", "slug"]


class ManufacturerSerializer(serializers.ModelSerializer):
    model_count = serializers.IntegerField(read_only=True, help_text="Car models of this manufacturer.")
    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta:
        model = Manufacturer
        fields = ["id", "name", "slug", "model_count", "url", "page_url", "created_at", "updated_at"]
        read_only_fields = ["slug", "created_at", "updated_at"]
        # Uniqueness is checked by the service (case-insensitively), not by the serializer.
        extra_kwargs = {"name": {"validators": []}}

    def get_url(self, manufacturer: Manufacturer) -> str:
        return reverse("manufacturer-detail", args=[manufacturer.slug], request=self.context.get("request"))

    def get_page_url(self, manufacturer: Manufacturer) -> str:
        return _absolute(self.context.get("request"), manufacturer.get_absolute_url())


class SpecificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Specification
        fields = [*SPEC_FIELDS, "source", "updated_at"]
        read_only_fields = ["source", "updated_at"]


class BlankAsNullURLField(serializers.URLField):
    """A URL that reads as null when there is none (the column stores "")."""

    def to_representation(self, value: str) -> str | None:
        return value or None


class CarImageSerializer(serializers.ModelSerializer):
    image = serializers.ImageField(read_only=True, help_text="Absolute URL of the stored JPEG.")
    source_url = BlankAsNullURLField(
        read_only=True, allow_null=True, help_text="Where the image was found; null when it has no source."
    )

    class Meta:
        model = CarImage
        fields = [
            "id",
            "car_model",
            "image",
            "width",
            "height",
            "view",
            "view_confidence",
            "origin",
            "source_url",
            "created_at",
        ]
        read_only_fields = fields


class CarImageUploadSerializer(serializers.Serializer):
    car_model = serializers.PrimaryKeyRelatedField(queryset=CarModel.objects.all())
    image = serializers.FileField(help_text=f"A {imaging.SUPPORTED_FORMATS_TEXT} photo.")
    view = serializers.ChoiceField(choices=ImageView.choices, default=ImageView.UNKNOWN)
    source_url = serializers.URLField(required=False, allow_blank=True, default="")


class CarImageUpdateSerializer(serializers.Serializer):
    view = serializers.ChoiceField(choices=ImageView.choices)
    view_confidence = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1, default=None)


class CarModelListSerializer(serializers.ModelSerializer):
    manufacturer = ManufacturerSummarySerializer(read_only=True)
    has_specs = serializers.BooleanField(read_only=True)
    image_count = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta:
        model = CarModel
        fields = [
            "id",
            "label",
            "slug",
            "name",
            "year",
            "manufacturer",
            "body_style",
            "msrp_usd",
            "has_specs",
            "image_count",
            "url",
            "page_url",
        ]

    def get_url(self, car_model: CarModel) -> str:
        return reverse("carmodel-detail", args=[car_model.slug], request=self.context.get("request"))

    def get_page_url(self, car_model: CarModel) -> str:
        return _absolute(self.context.get("request"), car_model.get_absolute_url())


class CarModelGallerySerializer(serializers.Serializer):
    exterior = CarImageSerializer(many=True)
    interior = CarImageSerializer(many=True)
    other = CarImageSerializer(many=True)
    unknown = CarImageSerializer(many=True)


class CarModelDetailSerializer(CarModelListSerializer):
    specs = serializers.SerializerMethodField()
    images = serializers.SerializerMethodField()

    class Meta(CarModelListSerializer.Meta):
        fields = [*CarModelListSerializer.Meta.fields, "specs", "images", "created_at", "updated_at"]

    @extend_schema_field(SpecificationSerializer(allow_null=True))
    def get_specs(self, car_model: CarModel) -> dict[str, Any] | None:
        spec = getattr(car_model, "specs", None) if hasattr(car_model, "specs") else None
        return SpecificationSerializer(spec, context=self.context).data if spec else None

    @extend_schema_field(CarModelGallerySerializer)
    def get_images(self, car_model: CarModel) -> dict[str, Any]:
        grouped: dict[str, list[CarImage]] = {view: [] for view in ImageView.values}
        for image in car_model.images.all():
            grouped.setdefault(image.view, []).append(image)
        return {
            view: CarImageSerializer(images, many=True, context=self.context).data for view, images in grouped.items()
        }


class SpecificationWriteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Specification
        fields = list(SPEC_FIELDS)
        extra_kwargs = {name: {"required": False} for name in SPEC_FIELDS}


class CarModelCreateSerializer(serializers.Serializer):
    manufacturer = serializers.CharField(max_length=100, help_text="Manufacturer name; created if new.")
    name = serializers.CharField(max_length=100)
    year = serializers.IntegerField(min_value=1886, max_value=2100)
    body_style = serializers.ChoiceField(choices=BodyStyle.choices, required=False, allow_blank=True)
    msrp_usd = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    specs = SpecificationWriteSerializer(required=False)


class CarModelUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    year = serializers.IntegerField(min_value=1886, max_value=2100, required=False)
    body_style = serializers.ChoiceField(choices=BodyStyle.choices, required=False, allow_blank=True)
    msrp_usd = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    specs = SpecificationWriteSerializer(required=False)


def _absolute(request: Any, path: str) -> str:
    return request.build_absolute_uri(path) if request is not None else path
