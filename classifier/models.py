"""Model registry, classification jobs and visitor feedback."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from catalog.models import CarImage, CarModel, TimeStampedModel


class ModelKind(models.TextChoices):
    GATE = "gate", "Gate (exterior / interior / other)"
    CLASSIFIER = "classifier", "Car model classifier"


class ModelVersion(TimeStampedModel):
    """A trained model bundle on disk, registered for use by the site. One active per kind."""

    kind = models.CharField(max_length=10, choices=ModelKind.choices)
    version = models.CharField(max_length=64, help_text="Content hash of the bundle.")
    architecture = models.CharField(max_length=50)
    bundle_path = models.CharField(
        max_length=500,
        help_text="The bundle's folder in the media storage (older rows: a directory of the host that registered it).",
    )
    labels = models.JSONField(default=list, help_text="Output labels in the model's order.")
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "version"], name="model_version_unique_per_kind"),
            models.UniqueConstraint(fields=["kind"], condition=Q(is_active=True), name="one_active_model_per_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.architecture} {self.version}" + (" (active)" if self.is_active else "")


class ModelVersionLabel(models.Model):
    """Maps one output label of a classifier to the catalog car model it stands for."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="label_links")
    index = models.PositiveIntegerField()
    label = models.CharField(max_length=200)
    car_model = models.ForeignKey(CarModel, on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["model_version", "index"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "index"], name="model_label_unique_index"),
            models.UniqueConstraint(fields=["model_version", "label"], name="model_label_unique_label"),
        ]

    def __str__(self) -> str:
        return self.label


class ClassificationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class GateVerdict(models.TextChoices):
    EXTERIOR = "exterior", "Exterior"
    INTERIOR = "interior", "Interior"
    OTHER = "other", "Not a car"


def classification_upload_to(instance: "Classification", filename: str) -> str:
    return f"classifications/{instance.created_at:%Y/%m}/{instance.id.hex}.jpg"


class Classification(models.Model):
    """One uploaded photo and what the models said about it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    image = models.ImageField(upload_to=classification_upload_to, width_field="width", height_field="height")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=ClassificationStatus.choices, default=ClassificationStatus.QUEUED)
    gate_verdict = models.CharField(max_length=10, choices=GateVerdict.choices, blank=True)
    gate_confidence = models.FloatField(null=True, blank=True)
    abstained = models.BooleanField(default=False)
    make_fallback = models.JSONField(default=list, blank=True, help_text="[{make, probability}] when abstained.")
    predicted_car_model = models.ForeignKey(
        CarModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="classifications"
    )
    confidence = models.FloatField(null=True, blank=True)
    gate_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    classifier_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    queue_wait_ms = models.FloatField(null=True, blank=True)
    decode_ms = models.FloatField(null=True, blank=True)
    gate_ms = models.FloatField(null=True, blank=True)
    classifier_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="What the visitor is told: never paths or exception text.")
    error_detail = models.TextField(blank=True, help_text="For operators only: the cause of the last failure.")
    attempts = models.PositiveSmallIntegerField(default=0)
    # A random token from the uploader's session (classifier.ownership), never their session key.
    owner_token = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    # Renewed by the worker while the job runs: a running job whose lease has expired was left by a dead worker.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when the task could not be sent (the broker was down); the periodic requeue sends it again.
    task_unsent_since = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The periodic look for jobs queued too long stays cheap however long the history grows.
            models.Index(fields=["created_at"], condition=Q(status="queued"), name="classification_queued"),
            # The periodic look for jobs left running by a dead worker, likewise.
            models.Index(fields=["started_at"], condition=Q(status="running"), name="classification_running"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="classification_confidence_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"Classification {self.id} ({self.status})"


class ClassificationPrediction(models.Model):
    classification = models.ForeignKey(Classification, on_delete=models.CASCADE, related_name="predictions")
    rank = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=200)
    car_model = models.ForeignKey(CarModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    probability = models.FloatField()

    class Meta:
        ordering = ["classification", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["classification", "rank"], name="prediction_unique_rank"),
            models.CheckConstraint(condition=Q(probability__gte=0, probability__lte=1), name="prediction_prob_0_1"),
        ]

    def __str__(self) -> str:
        return f"{self.rank}. {self.label} ({self.probability:.1%})"


class FeedbackStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Feedback(TimeStampedModel):
    """A visitor's confirmation or correction of a classification."""

    classification = models.OneToOneField(Classification, on_delete=models.CASCADE, related_name="feedback")
    is_confirmation = models.BooleanField(help_text="The visitor said the best match was right.")
    car_model = models.ForeignKey(CarModel, on_delete=models.PROTECT, related_name="feedback")
    status = models.CharField(max_length=10, choices=FeedbackStatus.choices, default=FeedbackStatus.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    training_image = models.ForeignKey(CarImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Feedback on {self.classification_id}: {self.car_model}"
