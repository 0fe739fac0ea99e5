"""Scrape runs and the pages they fetch.

A ``ScrapeRun`` is one crawl of one source with a scope. A ``PageRecord`` is one URL of one source,
site-wide: it remembers the validators (ETag / Last-Modified) of its last successful fetch so that
re-crawls send conditional requests, and the links found on it so that an unchanged (304) page
still leads to its children. Each record points at the run that last claimed it; within that run
a finished record is never processed again, which is what makes runs resumable and idempotent.
"""

from django.db import models
from django.db.models import Q
from django.urls import reverse

from catalog.models import CarModel


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


UNFINISHED_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class ScrapeRun(models.Model):
    source = models.CharField(max_length=40, help_text="Adapter name, e.g. 'tcc' or 'jsonld'.")
    base_url = models.URLField(max_length=500)
    makes = models.JSONField(default=list, blank=True, help_text="Make names or slugs; empty means every make.")
    years = models.JSONField(default=list, blank=True, help_text="Model years; empty means every year.")
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="At most this many model-year pages.")
    rate_per_second = models.FloatField(
        null=True, blank=True, help_text="Requests per second per host; empty uses the site setting, 0 lifts it."
    )
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Page counts are recomputed from PageRecords; the rest are incremented with F() as work completes.
    pages_done = models.PositiveIntegerField(default=0)
    pages_unchanged = models.PositiveIntegerField(default=0, help_text="Answered 304 Not Modified.")
    pages_failed = models.PositiveIntegerField(default=0)
    pages_skipped = models.PositiveIntegerField(default=0)
    pages_pending = models.PositiveIntegerField(default=0)
    models_created = models.PositiveIntegerField(default=0)
    models_updated = models.PositiveIntegerField(default=0)
    specs_saved = models.PositiveIntegerField(default=0, help_text="Specifications created or changed.")
    images_saved = models.PositiveIntegerField(default=0)
    images_skipped = models.PositiveIntegerField(default=0, help_text="Duplicates and images already stored.")
    images_failed = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rate_per_second__isnull=True) | Q(rate_per_second__gte=0), name="scrape_run_rate_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} {self.source} {self.base_url} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("admin:scraping_scraperun_change", args=[self.pk])

    @property
    def is_unfinished(self) -> bool:
        return self.status in UNFINISHED_RUN_STATUSES

    @property
    def scope_text(self) -> str:
        parts = []
        if self.makes:
            parts.append("makes " + ", ".join(str(m) for m in self.makes))
        if self.years:
            parts.append("years " + ", ".join(str(y) for y in self.years))
        if self.limit:
            parts.append(f"limit {self.limit}")
        return "; ".join(parts) or "everything"


class PageKind(models.TextChoices):
    INDEX = "index", "Index"
    MAKE = "make", "Make"
    MODEL = "model", "Model"
    SPEC = "spec", "Specifications"
    GALLERY = "gallery", "Gallery"
    IMAGE = "image", "Image"


class PageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class PageRecord(models.Model):
    source = models.CharField(max_length=40)
    url = models.URLField(max_length=1000)
    kind = models.CharField(max_length=10, choices=PageKind.choices)
    status = models.CharField(max_length=10, choices=PageStatus.choices, default=PageStatus.PENDING)
    run = models.ForeignKey(ScrapeRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="pages")
    car_model = models.ForeignKey(CarModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    not_modified = models.BooleanField(default=False, help_text="The last fetch answered 304 Not Modified.")
    links = models.JSONField(default=list, blank=True, help_text="Links found on the last successful parse.")
    error = models.TextField(blank=True, help_text="Why the page failed or was skipped, for a person.")
    error_code = models.CharField(max_length=40, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["source", "url"], name="page_record_unique_source_url")]
        indexes = [models.Index(fields=["run", "status"]), models.Index(fields=["run", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.url} ({self.status})"
