"""Reads of the scraping app, shaped for the admin and the ``scrape`` command."""

from django.db.models import QuerySet

from scraping.models import PageRecord, PageStatus, ScrapeRun


def run_list() -> QuerySet[ScrapeRun]:
    return ScrapeRun.objects.order_by("-created_at", "-id")


def run_problems(run: ScrapeRun, *, limit: int = 200) -> list[PageRecord]:
    """Failed pages first, then skipped ones, each with its reason."""
    pages = PageRecord.objects.filter(run=run, status__in=[PageStatus.FAILED, PageStatus.SKIPPED]).select_related(
        "car_model"
    )
    failed = list(pages.filter(status=PageStatus.FAILED).order_by("id")[:limit])
    skipped = list(pages.filter(status=PageStatus.SKIPPED).order_by("id")[: max(0, limit - len(failed))])
    return failed + skipped


def run_page_total(run: ScrapeRun) -> int:
    return PageRecord.objects.filter(run=run).count()


def run_summary(run: ScrapeRun) -> dict[str, int | str]:
    return {
        "status": run.status,
        "pages done": run.pages_done,
        "pages unchanged (304)": run.pages_unchanged,
        "pages skipped": run.pages_skipped,
        "pages failed": run.pages_failed,
        "pages pending": run.pages_pending,
        "models created": run.models_created,
        "models updated": run.models_updated,
        "specs saved": run.specs_saved,
        "images saved": run.images_saved,
        "images skipped": run.images_skipped,
        "images failed": run.images_failed,
    }
