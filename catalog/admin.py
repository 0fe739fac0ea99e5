"""Staff curation of the catalog. Every save goes through ``catalog.services``, like the API does,
so admin edits are validated, images normalised and de-duplicated the same way."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html

from catalog import imaging, services
from catalog.models import CarImage, CarModel, ImageOrigin, ImageView, Manufacturer, Specification
from catalog.naming import CarName, car_slug
from catalog.templatetags.carsite_format import usd


def _thumbnail(image: CarImage | None, css_class: str = "admin-thumb") -> str:
    """A linked image; its size comes from carsite/admin.css (the Content-Security-Policy allows no inline styles)."""
    if image is None or not image.pk or not image.image:
        return "—"
    return format_html(
        '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" class="{}"></a>',
        image.image.url,
        image.image.url,
        str(image),
        css_class,
    )


def _read_upload(upload: Any) -> bytes:
    upload.seek(0)
    data = upload.read()
    upload.seek(0)
    return data


def _validate_image_upload(upload: Any) -> imaging.NormalisedImage:
    """The same checks ``services.car_image_add`` makes, as a form error instead of an exception."""
    try:
        return imaging.normalise(_read_upload(upload), imaging.limits_from_settings())
    except imaging.ImageRejected as exc:
        raise ValidationError(str(exc), code=exc.code) from None


# --- Manufacturers ---


@admin.register(Manufacturer)
class ManufacturerAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "model_count"]
    search_fields = ["name"]
    readonly_fields = ["slug", "created_at", "updated_at"]
    fields = ["name", "slug", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Manufacturer]:
        return super().get_queryset(request).annotate(model_count=Count("car_models"))

    @admin.display(description="car models", ordering="model_count")
    def model_count(self, manufacturer: Manufacturer) -> int:
        return manufacturer.model_count

    def save_model(self, request: HttpRequest, obj: Manufacturer, form: forms.ModelForm, change: bool) -> None:
        if change:
            services.manufacturer_update(obj, name=obj.name)
            return
        saved = services.manufacturer_get_or_create(obj.name)
        obj.pk, obj.name, obj.slug = saved.pk, saved.name, saved.slug

    def delete_model(self, request: HttpRequest, obj: Manufacturer) -> None:
        services.manufacturer_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Manufacturer]) -> None:
        for manufacturer in queryset:
            services.manufacturer_delete(manufacturer)


# --- Car models, with their specification and images inline ---


class HasSpecsFilter(admin.SimpleListFilter):
    title = "specifications"
    parameter_name = "has_specs"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Has specifications"), ("no", "No specifications")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CarModel]) -> QuerySet[CarModel]:
        has_specs = Exists(Specification.objects.filter(car_model=OuterRef("pk")))
        if self.value() == "yes":
            return queryset.filter(has_specs)
        if self.value() == "no":
            return queryset.filter(~has_specs)
        return queryset


class HasImagesFilter(admin.SimpleListFilter):
    title = "images"
    parameter_name = "has_images"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("yes", "Has images"),
            ("no", "No images"),
            ("exterior", "Has exterior images"),
            ("interior", "Has interior images"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CarModel]) -> QuerySet[CarModel]:
        value = self.value()
        if value == "yes":
            return queryset.filter(Exists(CarImage.objects.filter(car_model=OuterRef("pk"))))
        if value == "no":
            return queryset.filter(~Exists(CarImage.objects.filter(car_model=OuterRef("pk"))))
        if value in (ImageView.EXTERIOR, ImageView.INTERIOR):
            return queryset.filter(Exists(CarImage.objects.filter(car_model=OuterRef("pk"), view=value)))
        return queryset


class SpecificationInline(admin.StackedInline):
    model = Specification
    extra = 0
    max_num = 1
    can_delete = True
    readonly_fields = ["source", "raw", "updated_at"]
    fieldsets = [
        ("Engine", {"fields": [
            "engine_type", "engine_description", "cylinders", "displacement_l",
            ("horsepower", "horsepower_rpm", "horsepower_approximate"), ("torque_lb_ft", "torque_rpm"),
            "drivetrain", "transmission",
        ]}),
        ("Economy", {"fields": [("mpg_city", "mpg_highway"), "electric_range_mi", "epa_class"]}),
        ("Body", {"fields": [("seats", "doors"), "front_wheel_size_in", ("length_in", "width_in", "height_in")]}),
        ("Provenance", {"classes": ["collapse"], "fields": ["source", "raw", "updated_at"]}),
    ]  # fmt: skip


class CarImageInlineForm(forms.ModelForm):
    upload = forms.FileField(
        required=False, help_text=f"{imaging.SUPPORTED_FORMATS_TEXT}; normalised and de-duplicated on save."
    )

    class Meta:
        model = CarImage
        fields = ["view"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("upload")
        if self.instance.pk is not None and upload:
            raise ValidationError("A stored image cannot be replaced; add the new file in an empty row.")
        if self.instance.pk is None and self.has_changed() and not upload:
            raise ValidationError("Choose an image file to add.")
        if upload:
            _validate_image_upload(upload)
        return cleaned


class CarImageInlineFormSet(BaseInlineFormSet):
    pass


class CarImageInline(admin.TabularInline):
    model = CarImage
    form = CarImageInlineForm
    formset = CarImageInlineFormSet
    extra = 1
    fields = ["thumbnail", "upload", "view", "view_confidence", "origin", "size"]
    readonly_fields = ["thumbnail", "view_confidence", "origin", "size"]
    show_change_link = True

    @admin.display(description="image")
    def thumbnail(self, image: CarImage) -> str:
        return _thumbnail(image)

    @admin.display(description="size")
    def size(self, image: CarImage) -> str:
        return f"{image.width}×{image.height}" if image.pk else "—"


class CarModelAdminForm(forms.ModelForm):
    class Meta:
        model = CarModel
        fields = ["manufacturer", "name", "year", "body_style", "msrp_usd"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        manufacturer, name, year = cleaned.get("manufacturer"), cleaned.get("name"), cleaned.get("year")
        if manufacturer and name and year:
            label = CarName(make=manufacturer.name, model=" ".join(name.split()), year=year).label
            clash = CarModel.objects.filter(Q(label__iexact=label) | Q(slug=car_slug(label)))
            if self.instance.pk:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                raise ValidationError(f"{label} is already in the catalog.")
        return cleaned


@admin.register(CarModel)
class CarModelAdmin(admin.ModelAdmin):
    form = CarModelAdminForm
    list_display = ["label", "manufacturer", "year", "body_style", "msrp", "exterior_count", "interior_count",
                    "image_count", "has_specs"]  # fmt: skip
    list_filter = [("manufacturer", admin.RelatedOnlyFieldListFilter), "year", "body_style", HasSpecsFilter,
                   HasImagesFilter]  # fmt: skip
    list_select_related = ["manufacturer"]
    search_fields = ["label", "name", "manufacturer__name"]
    readonly_fields = ["label", "slug", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["manufacturer", "name", "year", "label", "slug"]}),
        ("Market", {"fields": ["body_style", "msrp_usd"]}),
        ("Record", {"classes": ["collapse"], "fields": ["created_at", "updated_at"]}),
    ]
    inlines = [SpecificationInline, CarImageInline]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[CarModel]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                image_total=Count("images", distinct=True),
                exterior_total=Count("images", filter=Q(images__view=ImageView.EXTERIOR), distinct=True),
                interior_total=Count("images", filter=Q(images__view=ImageView.INTERIOR), distinct=True),
                specs_exist=Exists(Specification.objects.filter(car_model=OuterRef("pk"))),
            )
        )

    @admin.display(description="MSRP", ordering="msrp_usd")
    def msrp(self, car_model: CarModel) -> str:
        return usd(car_model.msrp_usd)

    @admin.display(description="exterior", ordering="exterior_total")
    def exterior_count(self, car_model: CarModel) -> int:
        return car_model.exterior_total

    @admin.display(description="interior", ordering="interior_total")
    def interior_count(self, car_model: CarModel) -> int:
        return car_model.interior_total

    @admin.display(description="images", ordering="image_total")
    def image_count(self, car_model: CarModel) -> int:
        return car_model.image_total

    @admin.display(description="specs", boolean=True, ordering="specs_exist")
    def has_specs(self, car_model: CarModel) -> bool:
        return car_model.specs_exist

    def save_model(self, request: HttpRequest, obj: CarModel, form: forms.ModelForm, change: bool) -> None:
        market = {"body_style": obj.body_style, "msrp_usd": obj.msrp_usd}
        if not change:
            saved, _ = services.car_model_get_or_create(
                make=obj.manufacturer.name, model=obj.name, year=obj.year, defaults=market
            )
            obj.pk, obj.label, obj.slug, obj.name = saved.pk, saved.label, saved.slug, saved.name
            obj.created_at, obj.updated_at = saved.created_at, saved.updated_at
            return
        if {"manufacturer", "name", "year"} & set(form.changed_data):
            services.car_model_rename(obj, name=obj.name, year=obj.year)
        services.car_model_update(obj, **market)

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        if formset.model is Specification:
            self._save_specification(form.instance, formset)
        elif formset.model is CarImage:
            self._save_images(request, form.instance, formset)
        else:  # pragma: no cover - no other inlines
            super().save_formset(request, form, formset, change)

    def _save_specification(self, car_model: CarModel, formset: Any) -> None:
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for spec_form in formset.forms:
            if not spec_form.has_changed() and not spec_form.cleaned_data.get("DELETE"):
                continue
            if spec_form.cleaned_data.get("DELETE"):
                if spec_form.instance.pk:
                    spec_form.instance.delete()
                    formset.deleted_objects.append(spec_form.instance)
                continue
            values = {name: spec_form.cleaned_data[name] for name in services.SPEC_FIELDS if name in spec_form.fields}
            spec, _ = services.specification_upsert(car_model, values=values, source="admin")
            if spec_form.instance.pk:
                formset.changed_objects.append((spec, spec_form.changed_data))
            else:
                formset.new_objects.append(spec)

    def _save_images(self, request: HttpRequest, car_model: CarModel, formset: Any) -> None:
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for image_form in formset.forms:
            if not image_form.has_changed() and not image_form.cleaned_data.get("DELETE"):
                continue
            image = image_form.instance
            if image_form.cleaned_data.get("DELETE"):
                if image.pk:
                    services.car_image_delete(image)
                    formset.deleted_objects.append(image)
                continue
            upload = image_form.cleaned_data.get("upload")
            if image.pk is None and upload:
                result = services.car_image_add(
                    car_model,
                    data=_read_upload(upload),
                    origin=ImageOrigin.UPLOADED,
                    view=image_form.cleaned_data.get("view") or ImageView.UNKNOWN,
                )
                if result.saved:
                    formset.new_objects.append(result.image)
                else:
                    self.message_user(
                        request,
                        f"{upload.name} was not added: {car_model.label} already has "
                        f"{'this image' if result.status == 'duplicate' else 'a near-identical image'} "
                        f"(#{result.duplicate_of.pk}).",
                        messages.WARNING,
                    )
            elif image.pk and "view" in image_form.changed_data:
                services.car_image_set_view(image, view=image_form.cleaned_data["view"], confidence=None)
                formset.changed_objects.append((image, ["view"]))

    def delete_model(self, request: HttpRequest, obj: CarModel) -> None:
        services.car_model_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CarModel]) -> None:
        with transaction.atomic():
            for car_model in queryset:
                services.car_model_delete(car_model)


# --- Images ---


class CarImageAdminForm(forms.ModelForm):
    upload = forms.FileField(
        required=False, help_text=f"{imaging.SUPPORTED_FORMATS_TEXT}; normalised and de-duplicated on save."
    )
    source_url = forms.URLField(required=False, max_length=1000, assume_scheme="https")

    class Meta:
        model = CarImage
        # source_url is a declared field: the read-only change form must not rebuild it from the model.
        fields = ["car_model", "view"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("upload")
        if self.instance.pk is None:
            if not upload:
                raise ValidationError({"upload": "Choose an image file to add."})
            try:
                _validate_image_upload(upload)
            except ValidationError as exc:
                raise ValidationError({"upload": exc.messages}) from None
        return cleaned


@admin.register(CarImage)
class CarImageAdmin(admin.ModelAdmin):
    form = CarImageAdminForm
    list_display = ["thumbnail", "car_model", "view", "view_confidence", "origin", "size", "created_at"]
    list_filter = ["view", "origin"]
    list_select_related = ["car_model"]
    search_fields = ["car_model__label", "source_url", "sha256"]
    autocomplete_fields = ["car_model"]
    list_per_page = 50

    @admin.display(description="image")
    def thumbnail(self, image: CarImage) -> str:
        return _thumbnail(image)

    @admin.display(description="size")
    def size(self, image: CarImage) -> str:
        return f"{image.width}×{image.height}"

    @admin.display(description="preview")
    def preview(self, image: CarImage) -> str:
        return _thumbnail(image, css_class="admin-preview")

    def get_fields(self, request: HttpRequest, obj: CarImage | None = None) -> list[str]:
        if obj is None:
            return ["car_model", "upload", "view", "source_url"]
        return ["preview", "car_model", "view", "view_confidence", "origin", "source_url", "size", "sha256", "phash"]

    def get_readonly_fields(self, request: HttpRequest, obj: CarImage | None = None) -> list[str]:
        if obj is None:
            return []
        # A stored image's bytes and hashes never change; only its view is curated.
        return ["preview", "car_model", "view_confidence", "origin", "source_url", "size", "sha256", "phash"]

    def save_model(self, request: HttpRequest, obj: CarImage, form: forms.ModelForm, change: bool) -> None:
        if change:
            if "view" in form.changed_data:
                services.car_image_set_view(obj, view=obj.view, confidence=None)
            return
        upload = form.cleaned_data["upload"]
        result = services.car_image_add(
            form.cleaned_data["car_model"],
            data=_read_upload(upload),
            origin=ImageOrigin.UPLOADED,
            view=form.cleaned_data["view"],
            source_url=form.cleaned_data.get("source_url") or "",
        )
        stored = result.image if result.saved else result.duplicate_of
        if not result.saved:
            self.message_user(
                request,
                f"Not stored again: this car model already has "
                f"{'this image' if result.status == 'duplicate' else 'a near-identical image'} (#{stored.pk}).",
                messages.WARNING,
            )
        obj.pk = stored.pk
        obj.__dict__.update({f.attname: getattr(stored, f.attname) for f in CarImage._meta.concrete_fields})

    def delete_model(self, request: HttpRequest, obj: CarImage) -> None:
        services.car_image_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CarImage]) -> None:
        with transaction.atomic():
            for image in queryset:
                services.car_image_delete(image)
