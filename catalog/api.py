"""Catalog REST API: manufacturers, car models (with specs and galleries) and images.

Anyone may read; writes need a staff account with the model's permission, as in the admin
(``StaffModelPermissionsOrReadOnly``, the project default), and go through ``catalog.services``
exactly like the admin and the management commands.
"""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import APIException
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.serializers import BaseSerializer

from carsite.schema import ErrorSerializer
from catalog import imaging, selectors, services
from catalog.filters import CarImageFilter, CarModelFilter
from catalog.models import CarImage, CarModel, ImageOrigin, Manufacturer
from catalog.serializers import (
    CarImageSerializer,
    CarImageUpdateSerializer,
    CarImageUploadSerializer,
    CarModelCreateSerializer,
    CarModelDetailSerializer,
    CarModelListSerializer,
    CarModelUpdateSerializer,
    ManufacturerSerializer,
)


class CatalogPagination(PageNumberPagination):
    """Page numbers; a page or page size that is not a whole number from 1 is refused (400), not ignored."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 200

    def _positive(self, request: Request, param: str) -> int | None:
        value = request.query_params.get(param)
        if value is None:
            return None
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise ApiValidationError({param: ["Enter a whole number from 1."]})
        return int(value)

    def get_page_size(self, request: Request) -> int:
        page_size = self._positive(request, self.page_size_query_param)
        return self.page_size if page_size is None else min(page_size, self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
        return parameters

    def get_page_number(self, request: Request, paginator: Any) -> int | str:
        if request.query_params.get(self.page_query_param) in self.last_page_strings:
            return super().get_page_number(request, paginator)
        return self._positive(request, self.page_query_param) or 1


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the catalog's current state."
    default_code = "conflict"


def _api_error(exc: DjangoValidationError | ValueError) -> ApiValidationError:
    if isinstance(exc, DjangoValidationError):
        return ApiValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return ApiValidationError(str(exc))


ID_OR_SLUG = OpenApiParameter("id_or_slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="Numeric id or slug.")


class IdOrSlugLookupMixin:
    """Detail routes accept either the numeric id or the slug."""

    lookup_url_kwarg = "id_or_slug"
    lookup_value_regex = r"[^/]+"

    def get_object(self) -> Any:
        queryset = self.filter_queryset(self.get_queryset())
        lookup = selectors.id_or_slug_filter(str(self.kwargs[self.lookup_url_kwarg]))
        if lookup is None:
            raise Http404
        obj = get_object_or_404(queryset, lookup)
        self.check_object_permissions(self.request, obj)
        return obj


STILL_USED = OpenApiResponse(ErrorSerializer, description="Refused while other catalog rows still use it.")


@extend_schema_view(
    retrieve=extend_schema(parameters=[ID_OR_SLUG]),
    update=extend_schema(parameters=[ID_OR_SLUG]),
    partial_update=extend_schema(parameters=[ID_OR_SLUG]),
    destroy=extend_schema(parameters=[ID_OR_SLUG], responses={204: None, 409: STILL_USED}),
)
class ManufacturerViewSet(IdOrSlugLookupMixin, viewsets.ModelViewSet):
    """Car manufacturers with their number of car models."""

    serializer_class = ManufacturerSerializer
    pagination_class = CatalogPagination
    filterset_fields: list[str] = []
    search_fields = ["name"]
    ordering_fields = ["name", "model_count"]
    ordering = ["name"]
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Manufacturer]:
        return selectors.manufacturer_list()

    def perform_create(self, serializer: BaseSerializer) -> None:
        try:
            manufacturer = services.manufacturer_get_or_create(serializer.validated_data["name"])
            serializer.instance = self.get_queryset().get(pk=manufacturer.pk)  # with its model_count
        except DjangoValidationError as exc:
            raise _api_error(exc) from None

    def perform_update(self, serializer: BaseSerializer) -> None:
        try:
            name = serializer.validated_data.get("name", serializer.instance.name)
            services.manufacturer_update(serializer.instance, name=name)
        except DjangoValidationError as exc:
            raise _api_error(exc) from None

    def perform_destroy(self, instance: Manufacturer) -> None:
        try:
            services.manufacturer_delete(instance)
        except DjangoValidationError as exc:
            raise Conflict(" ".join(exc.messages)) from None


@extend_schema_view(
    retrieve=extend_schema(parameters=[ID_OR_SLUG]),
    destroy=extend_schema(parameters=[ID_OR_SLUG], responses={204: None, 409: STILL_USED}),
    create=extend_schema(
        request=CarModelCreateSerializer,
        responses={
            201: CarModelDetailSerializer,
            409: OpenApiResponse(ErrorSerializer, description="This car model is already in the catalog."),
        },
    ),
    update=extend_schema(
        parameters=[ID_OR_SLUG], request=CarModelUpdateSerializer, responses={200: CarModelDetailSerializer}
    ),
    partial_update=extend_schema(
        parameters=[ID_OR_SLUG], request=CarModelUpdateSerializer, responses={200: CarModelDetailSerializer}
    ),
)
class CarModelViewSet(IdOrSlugLookupMixin, viewsets.ModelViewSet):
    """Car models by model year; the detail adds specifications and images grouped by view."""

    pagination_class = CatalogPagination
    filterset_class = CarModelFilter
    search_fields = ["label", "name", "manufacturer__name"]
    ordering_fields = ["label", "year", "msrp_usd", "manufacturer"]
    ordering_aliases = {"manufacturer": "manufacturer__name"}
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[CarModel]:
        if self.action == "list":
            return selectors.car_model_list()
        return selectors.car_model_list().prefetch_related("images")

    def get_serializer_class(self) -> type[BaseSerializer]:
        return {
            "list": CarModelListSerializer,
            "create": CarModelCreateSerializer,
            "update": CarModelUpdateSerializer,
            "partial_update": CarModelUpdateSerializer,
        }.get(self.action, CarModelDetailSerializer)

    def _detail(self, car_model: CarModel, status_code: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=car_model.pk)
        return Response(CarModelDetailSerializer(fresh, context=self.get_serializer_context()).data, status=status_code)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = CarModelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        specs = data.pop("specs", None)
        try:
            with transaction.atomic():
                car_model, created = services.car_model_get_or_create(
                    make=data.pop("manufacturer"), model=data.pop("name"), year=data.pop("year"), defaults=data
                )
                if not created:
                    raise Conflict(f"{car_model.label} is already in the catalog (id {car_model.pk}).")
                if specs:
                    services.specification_upsert(car_model, values=specs, source="api")
        except (DjangoValidationError, ValueError) as exc:
            raise _api_error(exc) from None
        return self._detail(car_model, status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        car_model = self.get_object()
        serializer = CarModelUpdateSerializer(data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        specs = data.pop("specs", None)
        rename = {key: data.pop(key) for key in ("name", "year") if key in data}
        try:
            with transaction.atomic():
                if rename:
                    services.car_model_rename(car_model, **rename)
                if data:
                    services.car_model_update(car_model, **data)
                if specs:
                    services.specification_upsert(car_model, values=specs, source="api")
        except (DjangoValidationError, ValueError) as exc:
            raise _api_error(exc) from None
        return self._detail(car_model)

    def perform_destroy(self, instance: CarModel) -> None:
        try:
            services.car_model_delete(instance)
        except DjangoValidationError as exc:
            raise Conflict(" ".join(exc.messages)) from None


@extend_schema_view(
    create=extend_schema(
        request={"multipart/form-data": CarImageUploadSerializer},
        responses={
            201: CarImageSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Not an acceptable image, or a field is invalid."),
            409: OpenApiResponse(
                ErrorSerializer, description="This car model already has this image (or a near-copy)."
            ),
        },
    ),
    partial_update=extend_schema(request=CarImageUpdateSerializer, responses={200: CarImageSerializer}),
)
class CarImageViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Images of car models; uploads are validated, normalised and de-duplicated."""

    serializer_class = CarImageSerializer
    pagination_class = CatalogPagination
    filterset_class = CarImageFilter
    search_fields: list[str] = []
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    lookup_value_regex = r"[^/]+"  # any id reaches the view, which answers 404 in JSON

    def get_queryset(self) -> QuerySet[CarImage]:
        return CarImage.objects.select_related("car_model").order_by("id")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = CarImageUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            result = services.car_image_add(
                data["car_model"],
                data=data["image"].read(),
                origin=ImageOrigin.UPLOADED,
                source_url=data["source_url"],
                view=data["view"],
            )
        except imaging.ImageRejected as exc:
            raise ApiValidationError({"image": [str(exc)]}, code=exc.code) from None
        if not result.saved:
            raise Conflict(f"This car model already has this image ({result.status}, image {result.duplicate_of.pk}).")
        body = CarImageSerializer(result.image, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        image = self.get_object()
        serializer = CarImageUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.car_image_set_view(
            image, view=serializer.validated_data["view"], confidence=serializer.validated_data["view_confidence"]
        )
        return Response(CarImageSerializer(image, context=self.get_serializer_context()).data)

    def perform_destroy(self, instance: CarImage) -> None:
        services.car_image_delete(instance)


def register(router: DefaultRouter) -> None:
    """Catalog API routes (manufacturers, models, images)."""
    router.register("manufacturers", ManufacturerViewSet, basename="manufacturer")
    router.register("models", CarModelViewSet, basename="carmodel")
    router.register("images", CarImageViewSet, basename="carimage")
