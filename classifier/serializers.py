"""Shapes of the classification API: what a job looks like, queued or finished."""

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from classifier.models import Classification, ClassificationStatus
from classifier.selectors import classifications as selectors


class UploadRequestSerializer(serializers.Serializer):
    """Documentation of the multipart request: one or more parts named ``image``."""

    image = serializers.ListField(
        child=serializers.FileField(),
        help_text="The photo (JPEG, PNG or WebP). Repeat the part to classify several photos in one request.",
    )


class PredictionSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    label = serializers.CharField()
    probability = serializers.FloatField()
    car_model_id = serializers.IntegerField(allow_null=True)
    car_model_slug = serializers.SerializerMethodField()

    def get_car_model_slug(self, prediction: Any) -> str | None:
        return prediction.car_model.slug if prediction.car_model_id else None


class SpecRowSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    value = serializers.CharField()
    unit = serializers.CharField()


class CarModelSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    make = serializers.CharField()
    model = serializers.CharField()
    year = serializers.IntegerField()
    slug = serializers.CharField()
    body_style = serializers.CharField()
    msrp_usd = serializers.IntegerField(allow_null=True)
    spec_rows = SpecRowSerializer(many=True)
    specs_approximate = serializers.BooleanField(help_text="The specs are rough figures from photo file names.")


class MakeProbabilitySerializer(serializers.Serializer):
    make = serializers.CharField()
    probability = serializers.FloatField()


class ResultSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=[
            selectors.OUTCOME_MATCH,
            selectors.OUTCOME_ABSTAINED,
            selectors.OUTCOME_INTERIOR,
            selectors.OUTCOME_NOT_A_CAR,
            selectors.OUTCOME_NO_CLASSIFIER,
            selectors.OUTCOME_FAILED,
        ]
    )
    gate_verdict = serializers.CharField(allow_blank=True)
    gate_confidence = serializers.FloatField(allow_null=True)
    gate_unavailable = serializers.BooleanField()
    abstained = serializers.BooleanField()
    confidence = serializers.FloatField(allow_null=True)
    car_model = CarModelSummarySerializer(allow_null=True)
    year_decided = serializers.BooleanField(
        help_text="The classifier named this model year; otherwise it named a model line and car_model is "
        "that line's newest year with specifications."
    )
    model_line_years = CarModelSummarySerializer(
        many=True, help_text="Every model year of the recognised line, newest first (empty if year_decided)."
    )
    msrp_range = serializers.ListField(
        child=serializers.IntegerField(), allow_null=True, help_text="[lowest, highest] MSRP across the line's years."
    )
    predictions = PredictionSerializer(many=True)
    likely_makes = MakeProbabilitySerializer(many=True)
    gate_version = serializers.CharField(allow_null=True)
    classifier_version = serializers.CharField(allow_null=True)


class TimingsSerializer(serializers.Serializer):
    queue_wait_ms = serializers.FloatField(allow_null=True)
    decode_ms = serializers.FloatField(allow_null=True)
    gate_ms = serializers.FloatField(allow_null=True)
    classifier_ms = serializers.FloatField(allow_null=True)
    total_ms = serializers.FloatField(allow_null=True)


TIMING_FIELDS = tuple(TimingsSerializer().fields)


def _absolute(path: str, request: Any) -> str:
    return request.build_absolute_uri(path) if request is not None else path


def _api_url(job: Classification, request: Any) -> str:
    return _absolute(reverse("classification-detail", kwargs={"pk": job.pk}), request)


def _page_url(job: Classification, request: Any) -> str:
    return _absolute(reverse("classifier:result", kwargs={"pk": job.pk}), request)


def _image_url(job: Classification, request: Any) -> str | None:
    return _absolute(job.image.url, request) if job.image else None


class ClassificationSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    class Meta:
        model = Classification
        fields = [
            "id",
            "status",
            "url",
            "page_url",
            "image_url",
            "original_filename",
            "width",
            "height",
            "attempts",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "timings",
            "result",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Classification) -> str:
        return _api_url(obj, self.context.get("request"))

    @extend_schema_field(OpenApiTypes.URI)
    def get_page_url(self, obj: Classification) -> str:
        return _page_url(obj, self.context.get("request"))

    @extend_schema_field(OpenApiTypes.URI)
    def get_image_url(self, obj: Classification) -> str | None:
        return _image_url(obj, self.context.get("request"))

    @extend_schema_field(TimingsSerializer)
    def get_timings(self, obj: Classification) -> dict[str, float | None]:
        return {name: getattr(obj, name) for name in TIMING_FIELDS}

    @extend_schema_field(ResultSerializer(allow_null=True))
    def get_result(self, obj: Classification) -> dict[str, Any] | None:
        if obj.status in (ClassificationStatus.QUEUED, ClassificationStatus.RUNNING):
            return None  # nothing to show yet; skips the queries a finished job needs
        result = selectors.classification_result(obj, with_galleries=False)
        if not result.finished:
            return None
        return {
            "outcome": result.outcome,
            "gate_verdict": obj.gate_verdict,
            "gate_confidence": obj.gate_confidence,
            "gate_unavailable": result.gate_unavailable,
            "abstained": obj.abstained,
            "confidence": obj.confidence,
            "car_model": _summary_data(result.summary) if result.summary is not None else None,
            "year_decided": result.year_decided,
            "model_line_years": [_summary_data(year) for year in result.line_years],
            "msrp_range": list(result.msrp_range) if result.msrp_range else None,
            "predictions": PredictionSerializer(obj.predictions.all(), many=True).data,
            "likely_makes": obj.make_fallback or [],
            "gate_version": obj.gate_version.version if obj.gate_version_id else None,
            "classifier_version": obj.classifier_version.version if obj.classifier_version_id else None,
        }


def _summary_data(summary: dict[str, Any]) -> dict[str, Any]:
    return {**summary, "spec_rows": SpecRowSerializer(summary["spec_rows"], many=True).data}


_DATETIME = serializers.DateTimeField()


def accepted_job_data(job: Classification, request: Any) -> dict[str, Any]:
    """What ``ClassificationSerializer`` gives for a job just queued, built directly.

    The upload answer is on the hot path of every upload, and building a ModelSerializer's fields
    costs more than the rest of the answer; a test holds the two to the same output.
    """
    return {
        "id": str(job.pk),
        "status": job.status,
        "url": _api_url(job, request),
        "page_url": _page_url(job, request),
        "image_url": _image_url(job, request),
        "original_filename": job.original_filename,
        "width": job.width,
        "height": job.height,
        "attempts": job.attempts,
        "error": job.error,
        "created_at": _DATETIME.to_representation(job.created_at),
        "started_at": _DATETIME.to_representation(job.started_at) if job.started_at else None,
        "finished_at": _DATETIME.to_representation(job.finished_at) if job.finished_at else None,
        "timings": {name: getattr(job, name) for name in TIMING_FIELDS},
        "result": None,
    }
