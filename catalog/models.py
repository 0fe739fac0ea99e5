"""The car catalog: manufacturers, car models by model year, their specifications and images."""

import uuid
from pathlib import PurePosixPath

from django.db import models
from django.db.models import Q
from django.urls import reverse


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Manufacturer(TimeStampedModel):
    name = models.CharField(max_length=100, unique=True, help_text="Official spelling, e.g. 'Mercedes-Benz'.")
    slug = models.SlugField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:manufacturer", kwargs={"slug": self.slug})


class BodyStyle(models.TextChoices):
    SEDAN = "sedan", "Sedan"
    COUPE = "coupe", "Coupe"
    CONVERTIBLE = "convertible", "Convertible"
    HATCHBACK = "hatchback", "Hatchback"
    WAGON = "wagon", "Station wagon"
    SUV = "suv", "SUV"
    PICKUP = "pickup", "Pickup"
    VAN = "van", "Van"
    MINIVAN = "minivan", "Minivan"
    OTHER = "other", "Other"


class CarModel(TimeStampedModel):
    manufacturer = models.ForeignKey(Manufacturer, on_delete=models.PROTECT, related_name="car_models")
    name = models.CharField(max_length=100, help_text="Model name without the make, e.g. 'ID.4'.")
    year = models.PositiveSmallIntegerField(help_text="Model year.")
    label = models.CharField(max_length=200, unique=True, help_text="'<year> <make> <model>', e.g. '2023 Audi A4'.")
    slug = models.SlugField(max_length=200, unique=True)
    body_style = models.CharField(max_length=20, choices=BodyStyle.choices, blank=True)
    msrp_usd = models.PositiveIntegerField(null=True, blank=True, verbose_name="MSRP (USD)")

    class Meta:
        ordering = ["manufacturer__name", "name", "-year"]
        constraints = [
            models.UniqueConstraint(fields=["manufacturer", "name", "year"], name="car_model_unique_make_name_year"),
            models.CheckConstraint(condition=Q(year__gte=1886, year__lte=2100), name="car_model_year_plausible"),
            models.CheckConstraint(condition=~Q(name=""), name="car_model_name_not_empty"),
        ]
        indexes = [models.Index(fields=["year"]), models.Index(fields=["body_style"])]

    def __str__(self) -> str:
        return self.label

    def get_absolute_url(self) -> str:
        return reverse("catalog:car_model", kwargs={"slug": self.slug})

    @property
    def make_and_model(self) -> str:
        return f"{self.manufacturer.name} {self.name}"


class EngineType(models.TextChoices):
    GAS = "gas", "Gas"
    DIESEL = "diesel", "Diesel"
    HYBRID = "hybrid", "Hybrid (gas/electric)"
    PLUG_IN_HYBRID = "plug_in_hybrid", "Plug-in hybrid"
    ELECTRIC = "electric", "Electric"
    FLEX_FUEL = "flex_fuel", "Flex fuel"
    HYDROGEN = "hydrogen", "Hydrogen fuel cell"


class Drivetrain(models.TextChoices):
    FWD = "FWD", "Front-wheel drive"
    RWD = "RWD", "Rear-wheel drive"
    AWD = "AWD", "All-wheel drive"
    FOUR_WD = "4WD", "Four-wheel drive"
    TWO_WD = "2WD", "Two-wheel drive"


def _non_negative(*fields: str) -> list[models.BaseConstraint]:
    return [
        models.CheckConstraint(condition=Q(**{f"{f}__gte": 0}) | Q(**{f"{f}__isnull": True}), name=f"spec_{f}_gte_0")
        for f in fields
    ]


class Specification(TimeStampedModel):
    """Typed specifications of one car model; every field is optional, the raw source rows are kept."""

    car_model = models.OneToOneField(CarModel, on_delete=models.CASCADE, related_name="specs")
    engine_type = models.CharField(max_length=20, choices=EngineType.choices, blank=True)
    engine_description = models.CharField(max_length=100, blank=True, help_text="As published, e.g. 'Gas V6'.")
    cylinders = models.PositiveSmallIntegerField(null=True, blank=True)
    displacement_l = models.DecimalField(
        max_digits=4, decimal_places=1, null=True, blank=True, verbose_name="displacement (L)"
    )
    horsepower = models.PositiveIntegerField(null=True, blank=True)
    horsepower_rpm = models.PositiveIntegerField(null=True, blank=True)
    horsepower_approximate = models.BooleanField(
        default=False, help_text="The source rounded the figure (e.g. down to tens)."
    )
    torque_lb_ft = models.PositiveIntegerField(null=True, blank=True, verbose_name="torque (lb-ft)")
    torque_rpm = models.PositiveIntegerField(null=True, blank=True)
    drivetrain = models.CharField(max_length=3, choices=Drivetrain.choices, blank=True)
    transmission = models.CharField(max_length=100, blank=True)
    mpg_city = models.PositiveSmallIntegerField(null=True, blank=True, verbose_name="city MPG")
    mpg_highway = models.PositiveSmallIntegerField(null=True, blank=True, verbose_name="highway MPG")
    electric_range_mi = models.PositiveSmallIntegerField(null=True, blank=True, verbose_name="electric range (mi)")
    seats = models.PositiveSmallIntegerField(null=True, blank=True)
    doors = models.PositiveSmallIntegerField(null=True, blank=True)
    front_wheel_size_in = models.DecimalField(
        max_digits=4, decimal_places=1, null=True, blank=True, verbose_name="front wheel size (in)"
    )
    length_in = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True, verbose_name="length (in)")
    width_in = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True, verbose_name="width (in)")
    height_in = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True, verbose_name="height (in)")
    epa_class = models.CharField(max_length=100, blank=True, verbose_name="EPA class")
    source = models.CharField(max_length=200, blank=True, help_text="Where these figures came from.")
    approximate = models.BooleanField(
        default=False, help_text="Rounded figures read from photo file names, not from a spec sheet."
    )
    raw = models.JSONField(default=dict, blank=True, help_text="The source rows as published, unparsed.")

    class Meta:
        constraints = _non_negative("displacement_l", "front_wheel_size_in", "length_in", "width_in", "height_in")

    def __str__(self) -> str:
        return f"Specifications of {self.car_model.label}"


class ImageView(models.TextChoices):
    EXTERIOR = "exterior", "Exterior"
    INTERIOR = "interior", "Interior"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class ImageOrigin(models.TextChoices):
    SCRAPED = "scraped", "Scraped"
    UPLOADED = "uploaded", "Uploaded"
    FEEDBACK = "feedback", "Visitor feedback"
    IMPORTED = "imported", "Imported"


def car_image_upload_to(instance: "CarImage", filename: str) -> str:
    # A fresh UUID per file: two images never share a name, whatever the source called them.
    suffix = PurePosixPath(filename).suffix.lower() or ".jpg"
    return f"catalog/{instance.car_model.slug}/{uuid.uuid4().hex}{suffix}"


class CarImage(TimeStampedModel):
    car_model = models.ForeignKey(CarModel, on_delete=models.CASCADE, related_name="images")
    image = models.ImageField(upload_to=car_image_upload_to, width_field="width", height_field="height")
    source_url = models.URLField(max_length=1000, blank=True)
    sha256 = models.CharField(max_length=64, help_text="Hash of the stored file's bytes.")
    phash = models.CharField(max_length=16, blank=True, help_text="64-bit perceptual hash, hex.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    view = models.CharField(max_length=10, choices=ImageView.choices, default=ImageView.UNKNOWN)
    view_confidence = models.FloatField(null=True, blank=True)
    origin = models.CharField(max_length=10, choices=ImageOrigin.choices)

    class Meta:
        ordering = ["car_model", "id"]
        constraints = [
            models.UniqueConstraint(fields=["car_model", "sha256"], name="car_image_unique_per_model"),
            models.CheckConstraint(condition=Q(width__gt=0, height__gt=0), name="car_image_positive_size"),
            models.CheckConstraint(
                condition=Q(view_confidence__isnull=True) | Q(view_confidence__gte=0, view_confidence__lte=1),
                name="car_image_view_confidence_0_1",
            ),
            models.CheckConstraint(condition=~Q(sha256=""), name="car_image_sha256_not_empty"),
        ]
        indexes = [models.Index(fields=["car_model", "view"]), models.Index(fields=["sha256"])]

    def __str__(self) -> str:
        return f"{self.car_model.label} {self.view} image #{self.pk}"
