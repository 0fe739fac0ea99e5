"""Reads of classification jobs, shaped for the result page, the API and the admin."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from django.db.models import Prefetch, QuerySet, prefetch_related_objects

from catalog.models import CarImage, CarModel, ImageView, Specification
from catalog.selectors import car_model_gallery, car_model_line_years
from classifier.models import (
    Classification,
    ClassificationPrediction,
    ClassificationStatus,
    Feedback,
    GateVerdict,
    ModelKind,
    ModelVersion,
)

GALLERY_LIMIT = 8

# What the visitor is told, one key per outcome; templates and the API share these keys.
OUTCOME_PENDING = "pending"
OUTCOME_FAILED = "failed"
OUTCOME_MATCH = "match"
OUTCOME_ABSTAINED = "abstained"
OUTCOME_INTERIOR = "interior"
OUTCOME_NOT_A_CAR = "not_a_car"
OUTCOME_NO_CLASSIFIER = "no_classifier"

# Spec rows shown on the result page and in the API, in display order: (field, label, unit).
SPEC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("engine_description", "Engine", ""),
    ("engine_type", "Fuel", ""),
    ("displacement_l", "Displacement", "L"),
    ("cylinders", "Cylinders", ""),
    ("horsepower", "Horsepower", "hp"),
    ("torque_lb_ft", "Torque", "lb-ft"),
    ("drivetrain", "Drivetrain", ""),
    ("transmission", "Transmission", ""),
    ("mpg_city", "City economy", "mpg"),
    ("mpg_highway", "Highway economy", "mpg"),
    ("electric_range_mi", "Electric range", "mi"),
    ("seats", "Seats", ""),
    ("doors", "Doors", ""),
    ("front_wheel_size_in", "Wheel size", "in"),
    ("length_in", "Length", "in"),
    ("width_in", "Width", "in"),
    ("height_in", "Height", "in"),
    ("epa_class", "EPA class", ""),
)


def _predictions_prefetch() -> Prefetch:
    return Prefetch(
        "predictions",
        queryset=ClassificationPrediction.objects.select_related("car_model__manufacturer").order_by("rank"),
    )


def classification_queryset() -> QuerySet[Classification]:
    """Jobs with what their result needs in one query; add the predictions with ``with_predictions``."""
    return Classification.objects.select_related(
        "predicted_car_model__manufacturer", "gate_version", "classifier_version"
    )


def with_predictions(classification: Classification) -> Classification:
    """Fetch the job's predictions in one query, only once it has finished: until then it has none.

    Pages and API clients poll a job while it is queued or running; this saves each poll a query.
    """
    if classification.status in (ClassificationStatus.DONE, ClassificationStatus.FAILED):
        prefetch_related_objects([classification], _predictions_prefetch())
    return classification


def classification_get(classification_id: uuid.UUID | str) -> Classification:
    """The job, with its predictions once finished; raises Classification.DoesNotExist."""
    return with_predictions(classification_queryset().get(pk=classification_id))


def classifications_for_owner(owner_token: str, *, limit: int = 12) -> list[Classification]:
    """The newest uploads made with this owner token (see classifier.ownership)."""
    if not owner_token:
        return []
    return list(
        Classification.objects.filter(owner_token=owner_token)
        .select_related("predicted_car_model")
        .order_by("-created_at")[:limit]
    )


def classifier_available() -> bool:
    """True when a classifier is active, so the upload page can warn before anyone uploads."""
    return ModelVersion.objects.filter(kind=ModelKind.CLASSIFIER, is_active=True).exists()


@dataclass(frozen=True)
class SpecRow:
    name: str
    label: str
    value: Any
    unit: str

    @property
    def display(self) -> str:
        text = str(self.value)
        return f"{text} {self.unit}" if self.unit else text


def spec_rows(spec: Specification | None) -> list[SpecRow]:
    """The filled-in specifications, in display order, with choice fields shown by their label."""
    if spec is None:
        return []
    rows: list[SpecRow] = []
    for name, label, unit in SPEC_ROWS:
        value = getattr(spec, name)
        if value in (None, ""):
            continue
        display_method = getattr(spec, f"get_{name}_display", None)
        if display_method is not None:
            value = display_method()
        if name == "horsepower" and spec.horsepower_approximate:
            value = f"≈{value}"
        rows.append(SpecRow(name=name, label=label, value=value, unit=unit))
    return rows


def car_model_summary(car_model: CarModel) -> dict[str, Any]:
    """The facts the result page and the API show about a matched car model (its specs may be select_related)."""
    spec = car_model.specs if hasattr(car_model, "specs") else None
    rows = spec_rows(spec)
    return {
        "id": car_model.pk,
        "label": car_model.label,
        "make": car_model.manufacturer.name,
        "model": car_model.name,
        "year": car_model.year,
        "slug": car_model.slug,
        "body_style": car_model.get_body_style_display() if car_model.body_style else "",
        "msrp_usd": car_model.msrp_usd,
        "specs": {row.name: row.value for row in rows},
        "spec_rows": rows,
        "specs_approximate": bool(spec and spec.approximate),
    }


@dataclass
class Candidate:
    prediction: ClassificationPrediction
    car_model: CarModel
    photos: list[CarImage]


CANDIDATES_SHOWN = 3
CANDIDATE_PHOTOS = 2


@dataclass
class ClassificationResult:
    """Everything a visitor sees about one job."""

    classification: Classification
    outcome: str
    gate_unavailable: bool = False
    best: ClassificationPrediction | None = None
    alternatives: list[ClassificationPrediction] = field(default_factory=list)
    car_model: CarModel | None = None
    summary: dict[str, Any] | None = None
    # The model line's years, newest first (summaries like ``summary``), when the classifier named a line
    # rather than a model year: the visitor picks the year, the answer never claims one.
    year_decided: bool = False
    line_years: list[dict[str, Any]] = field(default_factory=list)
    msrp_range: tuple[int, int] | None = None
    exterior_gallery: list[CarImage] = field(default_factory=list)
    interior_gallery: list[CarImage] = field(default_factory=list)
    # When the classifier is not sure: its likeliest models, each with a couple of photos to compare.
    candidates: list[Candidate] = field(default_factory=list)
    feedback: Feedback | None = None

    @property
    def finished(self) -> bool:
        return self.outcome != OUTCOME_PENDING


def classification_outcome(classification: Classification) -> str:
    if classification.status in (ClassificationStatus.QUEUED, ClassificationStatus.RUNNING):
        return OUTCOME_PENDING
    if classification.status == ClassificationStatus.FAILED:
        return OUTCOME_FAILED
    if classification.gate_verdict == GateVerdict.INTERIOR:
        return OUTCOME_INTERIOR
    if classification.gate_verdict == GateVerdict.OTHER:
        return OUTCOME_NOT_A_CAR
    if classification.classifier_version_id is None:
        return OUTCOME_NO_CLASSIFIER
    if classification.abstained:
        return OUTCOME_ABSTAINED
    return OUTCOME_MATCH


def classification_result(classification: Classification, *, with_galleries: bool = True) -> ClassificationResult:
    outcome = classification_outcome(classification)
    predictions = list(classification.predictions.all())
    result = ClassificationResult(
        classification=classification,
        outcome=outcome,
        gate_unavailable=classification.status == ClassificationStatus.DONE and not classification.gate_verdict,
        best=predictions[0] if predictions else None,
        alternatives=predictions[1:],
        feedback=Feedback.objects.filter(classification=classification).select_related("car_model").first(),
    )
    if outcome == OUTCOME_MATCH and result.best is not None and result.best.car_model_id is not None:
        car_model = CarModel.objects.select_related("manufacturer").get(pk=result.best.car_model_id)
        result.car_model = car_model
        result.year_decided = " ".join(result.best.label.split()).lower() == car_model.label.lower()
        line = [] if result.year_decided else model_line_summaries(car_model)
        result.line_years = line
        result.summary = next((year for year in line if year["id"] == car_model.pk), None) or car_model_summary(
            car_model
        )
        prices = [year["msrp_usd"] for year in line if year["msrp_usd"]]
        result.msrp_range = (min(prices), max(prices)) if prices else None
        if with_galleries:
            result.exterior_gallery = car_model_gallery(car_model, view=ImageView.EXTERIOR, limit=GALLERY_LIMIT)
            result.interior_gallery = car_model_gallery(car_model, view=ImageView.INTERIOR, limit=GALLERY_LIMIT)
    if outcome == OUTCOME_ABSTAINED and with_galleries:
        result.candidates = [
            Candidate(p, p.car_model, car_model_gallery(p.car_model, view=ImageView.EXTERIOR, limit=CANDIDATE_PHOTOS))
            for p in predictions[:CANDIDATES_SHOWN]
            if p.car_model is not None
        ]
    return result


def model_line_summaries(car_model: CarModel) -> list[dict[str, Any]]:
    """``car_model_summary`` of every model year of ``car_model``'s line, newest first."""
    return [car_model_summary(year) for year in car_model_line_years(car_model)]


def car_model_choices_by_make() -> list[tuple[str, list[tuple[int, str]]]]:
    """Every catalog car model grouped by make, for the 'which car is it really?' select."""
    rows = CarModel.objects.select_related("manufacturer").order_by("manufacturer__name", "name", "-year")
    return [
        (make, [(car_model.pk, f"{car_model.name} ({car_model.year})") for car_model in models])
        for make, models in groupby(rows, key=lambda car_model: car_model.manufacturer.name)
    ]
