"""Admin pages for the model registry (ModelVersion): metrics, reports, label mapping, activation."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from classifier.models import ModelVersion, ModelVersionLabel
from classifier.selectors.registry import model_version_report, model_version_report_image
from classifier.services.registry import RegistryError, model_version_activate

METRIC_LABELS = (
    ("evaluated_on", "Evaluated on"),
    ("folds", "Cross-validation folds"),
    ("top1", "Top-1 accuracy"),
    ("top1_mean", "Top-1 accuracy, mean over folds"),
    ("top1_std", "Top-1 accuracy, spread over folds"),
    ("top3", "Top-3 accuracy"),
    ("top3_mean", "Top-3 accuracy, mean over folds"),
    ("coverage", "Coverage (share answered) at the abstain threshold"),
    ("answered_precision", "Precision of the answered"),
    ("abstain_threshold", "Abstain threshold"),
    ("top5", "Top-5 accuracy"),
    ("macro_f1", "Macro F1"),
    ("ece_uncalibrated", "ECE before calibration"),
    ("ece_calibrated", "ECE after calibration"),
    ("temperature", "Temperature"),
    ("n", "Images evaluated"),
    ("evaluated_on", "Evaluated on"),
    ("macro_recall", "Macro recall (gate views)"),
    ("recall_exterior", "Exterior recall"),
    ("recall_interior", "Interior recall"),
    ("recall_other", "Other recall"),
    ("cv_folds", "Cross-validation folds"),
    ("n_train", "Training images"),
    ("n_feedback", "Accepted feedback photos among them"),
    ("n_val", "Validation images"),
    ("n_test", "Test images"),
    ("best_epoch", "Best epoch"),
    ("best_val_acc", "Best validation accuracy"),
)


def _metric(version: ModelVersion, name: str) -> str:
    value = (version.metrics or {}).get(name)
    return f"{value:.3f}" if isinstance(value, int | float) else "—"


class ModelVersionLabelInline(admin.TabularInline):
    model = ModelVersionLabel
    fields = ("index", "label", "car_model")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    change_form_template = "admin/classifier/modelversion/change_form.html"
    list_display = ("__str__", "kind", "architecture", "version", "is_active", "created_at", "top1", "ece")
    list_display_links = ("__str__",)
    list_filter = ("kind", "is_active", "architecture")
    search_fields = ("version", "architecture", "notes")
    ordering = ("-created_at",)
    readonly_fields = (
        "kind",
        "version",
        "architecture",
        "bundle_path",
        "is_active",
        "activated_at",
        "created_at",
        "labels",
    )
    fields = readonly_fields + ("notes",)
    inlines = (ModelVersionLabelInline,)
    actions = ("activate_selected",)

    @admin.display(description="top-1")
    def top1(self, obj: ModelVersion) -> str:
        return _metric(obj, "top1")

    @admin.display(description="ECE")
    def ece(self, obj: ModelVersion) -> str:
        return _metric(obj, "ece_calibrated")

    # Versions come from bundles (train_* / setup_demo commands); the admin only reads and activates.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.is_active)

    def get_urls(self) -> list:
        own = [
            path(
                "<int:pk>/activate/",
                self.admin_site.admin_view(require_POST(self.activate_view)),
                name="classifier_modelversion_activate",
            ),
            path(
                "<int:pk>/report/<str:name>",
                self.admin_site.admin_view(self.report_image_view),
                name="classifier_modelversion_report_image",
            ),
        ]
        return own + super().get_urls()

    def _activate(self, request: HttpRequest, version: ModelVersion) -> None:
        try:
            model_version_activate(version)
        except RegistryError as exc:
            self.message_user(request, f"Cannot activate {version}: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"Activated {version}.", messages.SUCCESS)

    @admin.action(description="Activate the selected version")
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        versions = list(queryset)
        kinds = [v.kind for v in versions]
        if len(set(kinds)) != len(kinds):
            self.message_user(request, "Select at most one version of each kind to activate.", messages.ERROR)
            return
        for version in versions:
            self._activate(request, version)

    def activate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise Http404
        version = get_object_or_404(ModelVersion, pk=pk)
        self._activate(request, version)
        return HttpResponseRedirect(reverse("admin:classifier_modelversion_change", args=[pk]))

    def report_image_view(self, request: HttpRequest, pk: int, name: str) -> HttpResponse:
        """Serve a whitelisted report image from the version's bundle; nothing else can be named."""
        if not self.has_view_or_change_permission(request):
            raise Http404
        version = get_object_or_404(ModelVersion, pk=pk)
        image = model_version_report_image(version, name)
        if image is None:
            raise Http404("No such report image.")
        return FileResponse(image.open("rb"), content_type="image/png")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        version = self.get_object(request, object_id)
        if version is not None:
            report = model_version_report(version)
            extra_context.update(
                metric_rows=[
                    (
                        label,
                        version.metrics[name]
                        if not isinstance(version.metrics[name], float)
                        else f"{version.metrics[name]:.4f}",
                    )
                    for name, label in METRIC_LABELS
                    if name in (version.metrics or {})
                ],
                report=report,
                report_images=[
                    (name, reverse("admin:classifier_modelversion_report_image", args=[version.pk, name]))
                    for name in report.images
                ],
                activate_url=reverse("admin:classifier_modelversion_activate", args=[version.pk]),
                version_obj=version,
            )
        return super().change_view(request, object_id, form_url, extra_context)
