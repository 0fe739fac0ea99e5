"""Admin for scrape runs: start one, watch its counts move, read its errors, resume or cancel it."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from scraping import selectors, services, tasks
from scraping.adapters import source_choices
from scraping.models import PageRecord, ScrapeRun


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", " ").split() if part.strip()]


class ScrapeRunStartForm(forms.Form):
    source = forms.ChoiceField(choices=source_choices, initial="tcc")
    base_url = forms.URLField(label="Base URL", max_length=500, assume_scheme="https")
    makes = forms.CharField(required=False, help_text="Make names or slugs, separated by commas; empty: every make.")
    years = forms.CharField(required=False, help_text="Model years, separated by commas; empty: every year.")
    limit = forms.IntegerField(required=False, min_value=1, help_text="At most this many model-year pages.")
    rate_per_second = forms.FloatField(
        required=False, min_value=0, label="Rate (requests/s per host)", help_text="Empty: the site setting."
    )

    def clean_years(self) -> list[str]:
        years = _split(self.cleaned_data["years"])
        bad = [y for y in years if not (y.isdigit() and len(y) == 4)]
        if bad:
            raise ValidationError(f"Not a year: {', '.join(bad)}.")
        return years

    def clean_makes(self) -> list[str]:
        return [m.strip() for m in self.cleaned_data["makes"].split(",") if m.strip()]


@admin.register(ScrapeRun)
class ScrapeRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "source",
        "base_url",
        "scope_text",
        "status",
        "pages_done",
        "pages_failed",
        "pages_pending",
        "models_created",
        "specs_saved",
        "images_saved",
        "images_skipped",
        "images_failed",
        "started_at",
        "finished_at",
    )
    list_display_links = ("id", "base_url")
    list_filter = ("status", "source")
    search_fields = ("base_url",)
    actions = ("resume_runs", "cancel_runs", "rerun_scope")
    fieldsets = (
        ("Run", {"fields": ("source", "base_url", "makes", "years", "limit", "rate_per_second", "status")}),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at")}),
        (
            "Pages",
            {"fields": ("pages_done", "pages_unchanged", "pages_skipped", "pages_failed", "pages_pending")},
        ),
        (
            "Catalog",
            {
                "fields": (
                    "models_created",
                    "models_updated",
                    "specs_saved",
                    "images_saved",
                    "images_skipped",
                    "images_failed",
                )
            },
        ),
        ("Errors", {"fields": ("error_count", "last_error", "pages_link")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: ScrapeRun | None = None) -> list[str]:
        return [name for _title, options in self.fieldsets for name in options["fields"]]

    def has_change_permission(self, request: HttpRequest, obj: ScrapeRun | None = None) -> bool:
        return False  # runs change only through the crawl and the actions

    @admin.display(description="Pages")
    def pages_link(self, run: ScrapeRun) -> str:
        url = reverse("admin:scraping_pagerecord_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">All {} pages of this run</a>', url, selectors.run_page_total(run))

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ScrapeRunStartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                run = services.run_create(
                    source=data["source"],
                    base_url=data["base_url"],
                    makes=data["makes"],
                    years=data["years"],
                    limit=data["limit"],
                    rate_per_second=data["rate_per_second"],
                )
            except ValidationError as exc:
                form.add_error(None, "; ".join(exc.messages))
            else:
                tasks.run_start_later(run)
                self.message_user(request, f"Run #{run.pk} started.", messages.SUCCESS)
                return redirect(reverse("admin:scraping_scraperun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Start a scrape run",
            "form": form,
            "opts": self.model._meta,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/scraping/scraperun/start.html", context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if run is not None:
            extra_context["problems"] = selectors.run_problems(run)
            extra_context["auto_refresh"] = run.is_unfinished
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Resume the selected runs", permissions=["add"])
    def resume_runs(self, request: HttpRequest, queryset) -> None:
        for run in queryset:
            tasks.run_start_later(services.run_reopen(run))
        self.message_user(request, f"Resumed {queryset.count()} run(s).", messages.SUCCESS)

    @admin.action(description="Cancel the selected runs", permissions=["add"])
    def cancel_runs(self, request: HttpRequest, queryset) -> None:
        for run in queryset:
            services.run_cancel(run)
        self.message_user(request, f"Cancelled {queryset.count()} run(s).", messages.SUCCESS)

    @admin.action(description="Run again with the same scope (re-crawl)", permissions=["add"])
    def rerun_scope(self, request: HttpRequest, queryset) -> None:
        for run in queryset:
            tasks.run_start_later(services.run_repeat(run))
        self.message_user(request, f"Started {queryset.count()} new run(s).", messages.SUCCESS)


@admin.register(PageRecord)
class PageRecordAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "http_status", "url", "error_code", "error", "run", "fetched_at")
    list_filter = ("status", "kind", "source", "error_code")
    search_fields = ("url", "error")
    list_select_related = ("run",)
    raw_id_fields = ("run", "car_model")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PageRecord | None = None) -> bool:
        return False
