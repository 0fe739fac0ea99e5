"""Celery tasks of the scraping app. Thin: they take primary keys and call ``scraping.services``.

With a broker, a run fans out as one task per page (index → make → model → spec → gallery →
images), each queued after its parent's transaction commits. Without one (eager mode), the run
task drives the same ``page_process`` in a loop instead, so the fan-out never recurses.
"""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, transaction

from scraping import services
from scraping.models import PageRecord, PageStatus, ScrapeRun


def _queue_pages(page_ids: list[int]) -> None:
    for page_id in page_ids:
        transaction.on_commit(lambda page_id=page_id: scrape_page.delay(page_id))


@shared_task(name="scraping.run")
def scrape_run(run_id: int) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        services.run_drive(run_id)
        return
    run = services.run_begin(run_id)
    # Resuming: every page still pending in this run gets a task (a duplicate task is a no-op).
    pending = list(PageRecord.objects.filter(run=run, status=PageStatus.PENDING).values_list("id", flat=True))
    _queue_pages(pending)
    if not pending:
        services.run_finish_if_idle(run_id)


@shared_task(
    name="scraping.page",
    acks_late=True,
    reject_on_worker_lost=True,
    # page_process is a no-op for a page already processed, so a database hiccup (or a worker that
    # died) is answered by running the task again rather than leaving the page pending and the run open.
    autoretry_for=(DatabaseError,),
    retry_backoff=1,
    max_retries=5,
)
def scrape_page(page_id: int) -> None:
    children = services.page_process(page_id)
    _queue_pages(children)
    run_id = PageRecord.objects.filter(pk=page_id).values_list("run_id", flat=True).first()
    if run_id:
        services.run_finish_if_idle(run_id)


@shared_task(name="scraping.recrawl")
def scrape_recrawl() -> list[int]:
    runs = services.recrawl_previous_runs()
    for run in runs:
        run_start_later(run)
    return [run.pk for run in runs]


def run_start_later(run: ScrapeRun) -> None:
    """Queue the run once the current transaction commits (admin, recrawl, ``scrape --async``)."""
    transaction.on_commit(lambda: scrape_run.delay(run.pk))
