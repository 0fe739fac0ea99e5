"""Writes of the scraping app: runs, pages, and the crawl that fills the catalog.

The crawl is a queue of ``PageRecord`` rows. ``page_process`` handles one pending record: it
fetches the URL (outside any transaction), parses it with the run's adapter, and then in one
transaction writes the catalog rows through ``catalog.services``, marks the record finished and
adds the records it links to. A crash at any point leaves either the whole page applied or none of
it, so processing the pending records again (``run_drive``) finishes the same catalog.

Both the in-process driver loop (eager mode, ``manage.py scrape``) and the Celery page tasks call
``page_process``; the loop processes records iteratively, so eager runs never recurse.
"""

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import OperationalError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from django.utils.text import slugify

from catalog import services as catalog_services
from catalog.imaging import ImageRejected
from catalog.models import CarImage, CarModel, ImageOrigin
from scraping.adapters import Link, NotACarPage, ParseError, SourceAdapter, UnknownSource, get_adapter
from scraping.adapters.base import SpecPage
from scraping.cleaning import clean_specs, raw_rows_as_dict
from scraping.http import Fetcher, FetchError, FetchResult, get_fetcher
from scraping.models import PageKind, PageRecord, PageStatus, RunStatus, ScrapeRun

logger = logging.getLogger(__name__)

MAX_URL_LENGTH: int = PageRecord._meta.get_field("url").max_length or 0
DEADLOCK_RETRIES = 3
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
T = TypeVar("T")


# --- runs ----------------------------------------------------------------------------------------


def _clean_makes(makes: Iterable[str]) -> list[str]:
    return sorted({" ".join(str(m).split()) for m in makes if str(m).strip()}, key=str.lower)


def _clean_years(years: Iterable[int | str]) -> list[int]:
    cleaned = set()
    for year in years:
        try:
            value = int(str(year).strip())
        except ValueError:
            raise ValidationError({"years": f"{year!r} is not a year."}) from None
        if not 1886 <= value <= 2100:
            raise ValidationError({"years": f"{value} is not a plausible model year."})
        cleaned.add(value)
    return sorted(cleaned)


def run_create(
    *,
    source: str,
    base_url: str,
    makes: Iterable[str] = (),
    years: Iterable[int | str] = (),
    limit: int | None = None,
    rate_per_second: float | None = None,
) -> ScrapeRun:
    """A new queued run; raises ValidationError for an unknown source or a bad scope."""
    try:
        get_adapter(source)
    except UnknownSource as exc:
        raise ValidationError({"source": str(exc)}) from None
    run = ScrapeRun(
        source=source,
        base_url=base_url.strip(),
        makes=_clean_makes(makes),
        years=_clean_years(years),
        limit=limit or None,
        rate_per_second=rate_per_second,
    )
    if limit is not None and limit < 0:
        raise ValidationError({"limit": "The limit cannot be negative."})
    if rate_per_second is not None and rate_per_second < 0:
        raise ValidationError({"rate_per_second": "The rate cannot be negative (0 lifts the limit)."})
    run.full_clean()
    run.save()
    return run


def run_find_unfinished(
    *, source: str, base_url: str, makes: Iterable[str] = (), years: Iterable[int | str] = (), limit: int | None = None
) -> ScrapeRun | None:
    """The latest queued or running run of exactly this scope: the one a restart should resume."""
    return (
        ScrapeRun.objects.filter(
            source=source,
            base_url=base_url.strip(),
            status__in=[RunStatus.QUEUED, RunStatus.RUNNING],
            limit=limit or None,
        )
        .filter(makes=_clean_makes(makes), years=_clean_years(years))
        .order_by("-created_at", "-id")
        .first()
    )


def run_begin(run_id: int) -> ScrapeRun:
    """Mark the run running (again) and make sure its index page is queued in it."""
    with transaction.atomic():
        run = ScrapeRun.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.DONE:
            return run
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.finished_at = None
        run.save(update_fields=["status", "started_at", "finished_at"])
        adapter = get_adapter(run.source)
        _enqueue(run, [Link(PageKind.INDEX, adapter.index_url(run.base_url))])
    return run


def run_cancel(run: ScrapeRun) -> ScrapeRun:
    """Stop a run: pending pages stay pending, so the run can be resumed later."""
    ScrapeRun.objects.filter(pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


def run_reopen(run: ScrapeRun) -> ScrapeRun:
    """Queue a cancelled, failed or interrupted run again; its finished pages are not redone."""
    ScrapeRun.objects.filter(pk=run.pk).exclude(status=RunStatus.DONE).update(status=RunStatus.QUEUED, finished_at=None)
    run.refresh_from_db()
    return run


def run_refresh_counts(run_id: int) -> None:
    """Recompute the page counts of a run from its PageRecords."""
    counts = PageRecord.objects.filter(run_id=run_id).aggregate(
        done=Count("id", filter=Q(status=PageStatus.DONE)),
        unchanged=Count("id", filter=Q(status=PageStatus.DONE, not_modified=True)),
        failed=Count("id", filter=Q(status=PageStatus.FAILED)),
        skipped=Count("id", filter=Q(status=PageStatus.SKIPPED)),
        pending=Count("id", filter=Q(status=PageStatus.PENDING)),
    )
    ScrapeRun.objects.filter(pk=run_id).update(
        pages_done=counts["done"],
        pages_unchanged=counts["unchanged"],
        pages_failed=counts["failed"],
        pages_skipped=counts["skipped"],
        pages_pending=counts["pending"],
        error_count=counts["failed"],
    )


def run_finish_if_idle(run_id: int) -> ScrapeRun:
    """Close a running run that has nothing pending: done, or failed if even its index failed."""
    run_refresh_counts(run_id)
    with transaction.atomic():
        run = ScrapeRun.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.CANCELLED and run.finished_at is None:
            run.finished_at = timezone.now()
            run.save(update_fields=["finished_at"])
        if run.status != RunStatus.RUNNING or run.pages.filter(status=PageStatus.PENDING).exists():
            return run
        index_failed = run.pages.filter(kind=PageKind.INDEX, status=PageStatus.FAILED).exists()
        run.status = RunStatus.FAILED if index_failed else RunStatus.DONE
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
    return run


def run_drive(
    run_id: int,
    *,
    fetcher: Fetcher | None = None,
    on_progress: Callable[[ScrapeRun], None] | None = None,
    progress_interval: float = 0.5,
) -> ScrapeRun:
    """Process the run's pending pages in this process until none are left (or it is cancelled)."""
    run = run_begin(run_id)
    if run.status == RunStatus.DONE:
        return run
    fetcher = fetcher or get_fetcher()
    last_report = 0.0
    while True:
        status = ScrapeRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if status != RunStatus.RUNNING:
            break
        batch = list(
            PageRecord.objects.filter(run_id=run_id, status=PageStatus.PENDING)
            .order_by("id")
            .values_list("id", flat=True)[:50]
        )
        if not batch:
            break
        for page_id in batch:
            page_process(page_id, fetcher=fetcher)
            if time.monotonic() - last_report >= progress_interval:
                last_report = time.monotonic()
                run_refresh_counts(run_id)
                if on_progress:
                    on_progress(ScrapeRun.objects.get(pk=run_id))
    run = run_finish_if_idle(run_id)
    if on_progress:
        on_progress(run)
    return run


def recrawl_previous_runs() -> list[ScrapeRun]:
    """New runs repeating the scope of every source's latest successful run (the weekly re-crawl).

    Pages keep their ETag / Last-Modified, so the new run's conditional requests refetch only what changed.
    """
    created = []
    seen: set[tuple] = set()
    for run in ScrapeRun.objects.filter(status=RunStatus.DONE).order_by("-finished_at", "-id"):
        key = (run.source, run.base_url, tuple(run.makes), tuple(run.years), run.limit)
        if key in seen:
            continue
        seen.add(key)
        if run_find_unfinished(
            source=run.source, base_url=run.base_url, makes=run.makes, years=run.years, limit=run.limit
        ):
            continue
        created.append(run_repeat(run))
    return created


def run_repeat(run: ScrapeRun) -> ScrapeRun:
    """A new queued run with ``run``'s source, site, scope, limit and rate (a re-crawl)."""
    return run_create(
        source=run.source,
        base_url=run.base_url,
        makes=run.makes,
        years=run.years,
        limit=run.limit,
        rate_per_second=run.rate_per_second,
    )


# --- pages ---------------------------------------------------------------------------------------


def _run_of(page: PageRecord) -> ScrapeRun:
    """The run a page is processed for (``page_process`` takes only pages that still have one)."""
    if page.run is None:
        raise ParseError("The page no longer belongs to a scrape run.")
    return page.run


def _bump(run_id: int, **amounts: int) -> None:
    amounts = {name: value for name, value in amounts.items() if value}
    if amounts:
        ScrapeRun.objects.filter(pk=run_id).update(**{name: F(name) + value for name, value in amounts.items()})


def _in_scope(run: ScrapeRun, *, make: str = "", year: int | None = None) -> bool:
    if make and run.makes and slugify(make) not in {slugify(m) for m in run.makes}:
        return False
    return not (year is not None and run.years and year not in run.years)


def _enqueue(run: ScrapeRun, links: Sequence[Link], car_model: CarModel | None = None) -> list[int]:
    """Queue the in-scope links in this run; returns the ids of records that became pending."""
    queued: list[int] = []
    spec_count = None
    for link in links:
        if not link.url.startswith(("http://", "https://")) or len(link.url) > MAX_URL_LENGTH:
            continue  # javascript:, mailto: and the like are never fetched nor shown as links
        if not _in_scope(run, make=link.make, year=link.year):
            continue
        if link.kind == PageKind.SPEC and run.limit:
            if spec_count is None:
                spec_count = PageRecord.objects.filter(run=run, kind=PageKind.SPEC).count()
            if spec_count >= run.limit:
                continue
        record, created = PageRecord.objects.get_or_create(
            source=run.source,
            url=link.url,
            defaults={"kind": link.kind, "run": run, "car_model": car_model, "status": PageStatus.PENDING},
        )
        if not created:
            if record.run_id == run.pk:
                continue  # already queued or finished in this run
            claimed = (
                PageRecord.objects.filter(pk=record.pk)
                .exclude(run=run)
                .update(
                    run=run,
                    kind=link.kind,
                    status=PageStatus.PENDING,
                    # A URL stays with the car model it was first found for (a photo shared by two
                    # model years must not move between them from one crawl to the next).
                    car_model_id=record.car_model_id or (car_model.pk if car_model else None),
                    error="",
                    error_code="",
                    attempts=0,
                )
            )
            if not claimed:
                continue
        queued.append(record.pk)
        if link.kind == PageKind.SPEC and spec_count is not None:
            spec_count += 1
    return queued


def _finish(
    page: PageRecord,
    status: str,
    *,
    result: FetchResult | None = None,
    links: Sequence[Link] | None = None,
    car_model: CarModel | None = None,
    error: str = "",
    error_code: str = "",
    also_save: Sequence[str] = (),
) -> None:
    page.status = status
    page.error, page.error_code = error, error_code
    page.attempts += 1
    fields = ["status", "error", "error_code", "attempts", "updated_at", *also_save]
    if result is not None:
        page.http_status, page.fetched_at, page.not_modified = result.status, timezone.now(), result.not_modified
        fields += ["http_status", "fetched_at", "not_modified"]
        if status != PageStatus.FAILED and not result.not_modified:
            # Validators are kept only for content that was applied, so a 304 always means "already have it".
            page.etag, page.last_modified = result.etag[:500], result.last_modified[:100]
            fields += ["etag", "last_modified"]
    if links is not None:
        page.links = [link.as_dict() for link in links]
        fields.append("links")
    if car_model is not None:
        page.car_model = car_model
        fields.append("car_model")
    page.save(update_fields=fields)


def _with_deadlock_retries(page: PageRecord, action: Callable[[], T]) -> T:
    """Run ``action`` (which writes in its own transactions) again when the database aborts it to break a lock cycle.

    Concurrent workers can deadlock on the run, the car model and the page rows; PostgreSQL then aborts one
    transaction, which wrote nothing. The page is reloaded before the next try, since the aborted attempt may
    have changed it in memory (attempts, status).
    """
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            return action()
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == DEADLOCK_RETRIES:
                raise
            time.sleep(0.05 * (attempt + 1))
            page.refresh_from_db()
    raise AssertionError("unreachable: the last attempt returns or raises")


def _fail(page: PageRecord, code: str, message: str, *, status: int | None = None, skipped: bool = False) -> None:
    def record() -> None:
        with transaction.atomic():
            # One UPDATE of the page: a second one in the same transaction would make PostgreSQL re-check
            # the page's car model key at commit, after this transaction has locked the run, while an
            # image being added holds that car model and waits for the run (a deadlock seen in CI).
            if status is not None:
                page.http_status = status
            _finish(
                page,
                PageStatus.SKIPPED if skipped else PageStatus.FAILED,
                error=message,
                error_code=code,
                also_save=("http_status",),
            )
            if page.kind == PageKind.IMAGE:
                _bump(_run_of(page).pk, **({"images_skipped": 1} if skipped else {"images_failed": 1}))
            if not skipped:
                ScrapeRun.objects.filter(pk=_run_of(page).pk).update(last_error=f"{page.url}: {message}"[:2000])

    _with_deadlock_retries(page, record)


def page_process(page_id: int, *, fetcher: Fetcher | None = None) -> list[int]:
    """Process one pending page of a running run; returns the ids of the pages it queued.

    Safe to call twice: a page that is no longer pending, or whose run is not running, is left alone.
    Every failure ends in the record (status, code, readable message), never in an exception.
    """
    page = PageRecord.objects.select_related("run", "car_model").filter(pk=page_id).first()
    if page is None or page.status != PageStatus.PENDING or page.run is None:
        return []
    if page.run.status != RunStatus.RUNNING:
        return []
    fetcher = fetcher or get_fetcher()
    try:
        adapter = get_adapter(page.run.source)
        if page.kind == PageKind.IMAGE:
            return _with_deadlock_retries(page, lambda: _process_image(page, fetcher))
        return _with_deadlock_retries(page, lambda: _process_page(page, adapter, fetcher))
    except FetchError as exc:
        _fail(page, exc.code, str(exc), status=exc.status, skipped=exc.code == "robots_disallowed")
    except NotACarPage as exc:
        _fail(page, "not_a_car_page", str(exc), skipped=True)
    except ParseError as exc:
        _fail(page, "parse_error", str(exc))
    except ImageRejected as exc:
        _fail(page, exc.code, str(exc))
    except ValidationError as exc:
        _fail(page, "invalid", "; ".join(exc.messages))
    except Exception as exc:  # an unexpected bug must still end as a readable, recorded failure
        logger.exception("scraping %s failed", page.url)
        _fail(page, "internal_error", f"{exc.__class__.__name__}: {exc}")
    return []


def _rate(page: PageRecord) -> float | None:
    return _run_of(page).rate_per_second


def _fetch(page: PageRecord, fetcher: Fetcher, *, conditional: bool, max_bytes: int | None = None) -> FetchResult:
    return fetcher.get(
        page.url,
        etag=page.etag if conditional else "",
        last_modified=page.last_modified if conditional else "",
        max_bytes=max_bytes,
        rate_per_host=_rate(page),
    )


def _stored_links(page: PageRecord) -> list[Link]:
    return [Link.from_dict(item) for item in page.links or []]


def _followed(page: PageRecord, links: Sequence[Link]) -> tuple[list[Link], str]:
    """The links of ``page`` the crawl follows, and a note for the page when some were dropped.

    Pages are followed on the run's own host only (images may live on another, e.g. a CDN, and lead
    nowhere), and at most SCRAPER_MAX_LINKS_PER_PAGE of them: one huge page must not flood the queue.
    """
    host = urlsplit(_run_of(page).base_url).hostname
    cap = settings.SCRAPER_MAX_LINKS_PER_PAGE
    kept: list[Link] = []
    for link in links:
        if len(kept) == cap:
            note = f"{len(links):,} links found; only the first {cap:,} are followed (SCRAPER_MAX_LINKS_PER_PAGE)."
            logger.warning("run %s: %s: %s", page.run_id, page.url, note)
            return kept, note
        if link.kind == PageKind.IMAGE or urlsplit(link.url).hostname == host:
            kept.append(link)
    return kept, ""


def _finish_read_page(page: PageRecord, result: FetchResult, links: list[Link], note: str, **fields) -> None:
    _finish(
        page,
        PageStatus.DONE,
        result=result,
        links=links,
        error=note,
        error_code="links_capped" if note else "",
        **fields,
    )


def _report_dropped_links(page: PageRecord, note: str) -> None:
    """Last in a transaction, as it writes the run row."""
    if note:
        ScrapeRun.objects.filter(pk=_run_of(page).pk).update(last_error=f"{page.url}: {note}"[:2000])


def _process_page(page: PageRecord, adapter: SourceAdapter, fetcher: Fetcher) -> list[int]:
    run = _run_of(page)
    # A 304 is only useful when what the page said last time was applied (validators are stored only
    # then) and, for spec and gallery pages, the car model it was applied to is known.
    conditional = page.kind not in (PageKind.SPEC, PageKind.GALLERY) or page.car_model_id is not None
    result = _fetch(page, fetcher, conditional=conditional)
    if page.kind in (PageKind.INDEX, PageKind.MAKE, PageKind.MODEL):
        if result.not_modified:
            links, note = _stored_links(page), ""
        else:
            links, note = _followed(page, adapter.discover(page.kind, page.url, result.text))
        with transaction.atomic():
            _finish_read_page(page, result, links, note)
            queued = _enqueue(run, links)
            _report_dropped_links(page, note)
            return queued
    if page.kind == PageKind.GALLERY:
        if page.car_model_id is None:
            raise ParseError("A gallery page needs the car model of its spec page.")
        if result.not_modified:
            links, note = _stored_links(page), ""
        else:
            images = adapter.parse_gallery(page.url, result.text)
            links, note = _followed(page, [Link(PageKind.IMAGE, url) for url in images])
        with transaction.atomic():
            _finish_read_page(page, result, links, note)
            queued = _enqueue(run, links, car_model=page.car_model)
            _report_dropped_links(page, note)
            return queued
    if page.kind == PageKind.SPEC:
        if result.not_modified:
            with transaction.atomic():
                links = _stored_links(page)
                _finish(page, PageStatus.DONE, result=result, links=links)
                return _enqueue(run, links, car_model=page.car_model)
        spec = adapter.parse_spec(page.url, result.text)
        if not _in_scope(run, make=spec.make, year=spec.year):
            _finish(
                page,
                PageStatus.SKIPPED,
                result=result,
                error=f"{spec.year} {spec.make} {spec.model} is outside the run's scope.",
                error_code="out_of_scope",
            )
            return []
        links = [Link(PageKind.IMAGE, url) for url in spec.image_urls]
        if spec.gallery_url:
            links.insert(0, Link(PageKind.GALLERY, spec.gallery_url))
        links, note = _followed(page, links)
        with transaction.atomic():
            applied = spec_apply(run.source, page.url, spec)
            _finish_read_page(page, result, links, note, car_model=applied.car_model)
            queued = _enqueue(run, links, car_model=applied.car_model)
            # Counters last: every transaction locks catalog rows before the run row, so none deadlock.
            _bump(
                run.pk,
                models_created=int(applied.created),
                models_updated=int(applied.model_changed),
                specs_saved=int(applied.spec_changed),
            )
            _report_dropped_links(page, note)
            return queued
    raise ValueError(f"Unknown page kind {page.kind!r}")


@dataclass(frozen=True)
class SpecApplied:
    car_model: CarModel
    created: bool
    model_changed: bool
    spec_changed: bool


def spec_apply(source: str, url: str, spec: SpecPage) -> SpecApplied:
    """Write one parsed spec page to the catalog (car model, its MSRP/body style, typed specs, raw rows)."""
    cleaned = clean_specs(spec.rows)
    with transaction.atomic():
        car_model, created = catalog_services.car_model_get_or_create(
            make=spec.make, model=spec.model, year=spec.year, defaults=cleaned.car_model_values
        )
        changes = {k: v for k, v in cleaned.car_model_values.items() if getattr(car_model, k) != v}
        if changes and not created:
            catalog_services.car_model_update(car_model, **changes)
        raw = {
            "url": url,
            "rows": raw_rows_as_dict(spec.rows),
            "unparsed": [list(item) for item in cleaned.unparsed],
        }
        _spec, spec_changed = catalog_services.specification_upsert(
            car_model, values=cleaned.values, raw=raw, source=source
        )
    return SpecApplied(car_model, created, bool(changes) and not created, spec_changed)


def _process_image(page: PageRecord, fetcher: Fetcher) -> list[int]:
    car_model = page.car_model
    if car_model is None:
        raise ParseError("An image page needs the car model it belongs to.")
    stored = CarImage.objects.filter(car_model=car_model, source_url=page.url).first()
    if stored:
        with transaction.atomic():
            _finish(
                page, PageStatus.SKIPPED, error=f"Already stored as image #{stored.pk}.", error_code="already_stored"
            )
            _bump(_run_of(page).pk, images_skipped=1)
        return []
    # An image skipped as a duplicate last time is asked for conditionally: unchanged bytes are not re-read.
    conditional = page.error_code in ("duplicate", "near_duplicate", "unchanged")
    result = _fetch(page, fetcher, conditional=conditional, max_bytes=settings.SCRAPER_MAX_IMAGE_BYTES)
    if result.not_modified:
        with transaction.atomic():
            _finish(
                page, PageStatus.SKIPPED, result=result, error="Unchanged since the last crawl.", error_code="unchanged"
            )
            _bump(_run_of(page).pk, images_skipped=1)
        return []
    with transaction.atomic():
        added = catalog_services.car_image_add(
            car_model, data=result.body, origin=ImageOrigin.SCRAPED, source_url=page.url
        )
        if added.saved:
            _finish(page, PageStatus.DONE, result=result)
            _bump(_run_of(page).pk, images_saved=1)
        else:
            assert added.duplicate_of is not None  # not saved: a copy of this stored image
            what = "An exact" if added.status == "duplicate" else "A near"
            _finish(
                page,
                PageStatus.SKIPPED,
                result=result,
                error=f"{what} duplicate of image #{added.duplicate_of.pk}.",
                error_code=added.status,
            )
            _bump(_run_of(page).pk, images_skipped=1)
    return []
