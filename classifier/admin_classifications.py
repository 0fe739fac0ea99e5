"""Admin pages for classifications and visitor feedback."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html

from classifier.models import Classification, ClassificationPrediction, Feedback, FeedbackStatus
from classifier.services.feedback import feedback_accept, feedback_reject


def _thumbnail(image_field, css_class: str = "admin-photo-thumb") -> str:
    """The photo, sized by carsite/admin.css (the Content-Security-Policy allows no inline styles)."""
    if not image_field:
        return "—"
    return format_html('<img src="{}" alt="" class="{}">', image_field.url, css_class)


class ClassificationPredictionInline(admin.TabularInline):
    model = ClassificationPrediction
    extra = 0
    can_delete = False
    fields = ["rank", "label", "car_model", "probability"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Classification)
class ClassificationAdmin(admin.ModelAdmin):
    list_display = [
        "thumbnail",
        "created_at",
        "status",
        "gate_verdict",
        "predicted_car_model",
        "confidence",
        "abstained",
        "total_ms",
        "attempts",
    ]
    list_filter = ["status", "gate_verdict", "abstained", ("predicted_car_model", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["predicted_car_model"]
    search_fields = ["id", "original_filename", "predicted_car_model__label"]
    date_hierarchy = "created_at"
    inlines = [ClassificationPredictionInline]
    # What the models said is a record, not something to edit.
    readonly_fields = [
        "id",
        "preview",
        "original_filename",
        "width",
        "height",
        "sha256",
        "status",
        "gate_verdict",
        "gate_confidence",
        "predicted_car_model",
        "confidence",
        "abstained",
        "make_fallback",
        "gate_version",
        "classifier_version",
        "queue_wait_ms",
        "decode_ms",
        "gate_ms",
        "classifier_ms",
        "total_ms",
        "error",
        "error_detail",
        "attempts",
        "lease_expires_at",
        "task_unsent_since",
        "user",
        "created_at",
        "started_at",
        "finished_at",
    ]
    exclude = ["image"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # photos come in through the site and the API, which validate them

    @admin.display(description="Photo")
    def thumbnail(self, obj: Classification) -> str:
        return _thumbnail(obj.image)

    @admin.display(description="Photo")
    def preview(self, obj: Classification) -> str:
        return _thumbnail(obj.image, "admin-photo-preview")


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "created_at", "car_model", "is_confirmation", "predicted", "status", "reviewed_by"]
    list_filter = ["status", "is_confirmation"]
    list_select_related = ["car_model", "classification__predicted_car_model", "reviewed_by"]
    search_fields = ["car_model__label", "classification__id"]
    readonly_fields = [
        "preview",
        "classification",
        "is_confirmation",
        "car_model",
        "status",
        "reviewed_by",
        "reviewed_at",
        "training_image",
        "created_at",
    ]
    fields = readonly_fields
    actions = ["accept_feedback", "reject_feedback"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Photo")
    def thumbnail(self, obj: Feedback) -> str:
        return _thumbnail(obj.classification.image)

    @admin.display(description="Photo")
    def preview(self, obj: Feedback) -> str:
        return _thumbnail(obj.classification.image, "admin-photo-preview")

    @admin.display(description="Predicted")
    def predicted(self, obj: Feedback) -> str:
        return str(obj.classification.predicted_car_model or "—")

    @admin.action(description="Accept: add the photos to the catalog as training images", permissions=["change"])
    def accept_feedback(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> TemplateResponse | None:
        """Asks first, showing how many photos would join the training images (as the admin's delete does)."""
        acceptable = queryset.filter(status__in=[FeedbackStatus.PENDING, FeedbackStatus.REJECTED])
        if request.POST.get("post") != "yes":
            items = list(acceptable.select_related("car_model", "classification"))
            if not items:
                self.message_user(request, "None of the selected feedback is waiting to be accepted.", messages.INFO)
                return None
            context = {
                **self.admin_site.each_context(request),
                "title": "Add these photos to the training images?",
                "opts": self.model._meta,
                "items": items,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/classifier/feedback/accept_confirmation.html", context)
        accepted, failed = 0, []
        for feedback in acceptable:
            try:
                feedback_accept(feedback, reviewer=request.user)
                accepted += 1
            except ValidationError as exc:
                failed.append(f"{feedback.car_model}: {' '.join(exc.messages)}")
        if accepted:
            self.message_user(request, f"Accepted {accepted} feedback item(s) as training images.", messages.SUCCESS)
        for message in failed:
            self.message_user(request, message, messages.ERROR)

    @admin.action(description="Reject", permissions=["change"])
    def reject_feedback(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> None:
        rejected = 0
        for feedback in queryset.filter(status=FeedbackStatus.PENDING):
            feedback_reject(feedback, reviewer=request.user)
            rejected += 1
        self.message_user(request, f"Rejected {rejected} feedback item(s).", messages.SUCCESS)
