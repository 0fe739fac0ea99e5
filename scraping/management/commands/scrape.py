"""``manage.py scrape``: crawl a source into the catalog, with a progress bar; resumable."""

import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scraping import selectors, services, tasks
from scraping.adapters import ADAPTERS
from scraping.models import RunStatus, ScrapeRun


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


class Command(BaseCommand):
    help = "Crawl a car site into the catalog. Re-running the same scope, or --resume RUN_ID, continues a run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", choices=sorted(ADAPTERS), default="tcc")
        parser.add_argument("--base-url", help="Root URL of the site, e.g. https://www.thecarconnection.com")
        parser.add_argument("--years", nargs="*", help="Model years, e.g. 2023 2024 or 2023,2024")
        parser.add_argument("--makes", nargs="*", help="Make names or slugs, e.g. audi bmw")
        parser.add_argument("--limit", type=int, help="At most this many model-year pages")
        parser.add_argument("--rate", type=float, help="Requests per second per host (0 lifts the limit)")
        parser.add_argument("--resume", type=int, metavar="RUN_ID", help="Continue this run")
        parser.add_argument(
            "--new", action="store_true", help="Start a new run even if one of this scope is unfinished"
        )
        parser.add_argument("--async", dest="queue", action="store_true", help="Queue the run on Celery and return")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar")

    def handle(self, *args, **options) -> None:
        run = self._run(options)
        if options["queue"]:
            tasks.run_start_later(run)
            self.stdout.write(f"Queued run #{run.pk}.")
            return
        run = self._drive(run, progress=not options["no_progress"])
        self.stdout.write(f"Run #{run.pk} {run.source} {run.base_url} [{run.scope_text}]")
        for name, value in selectors.run_summary(run).items():
            self.stdout.write(f"  {name:>22}: {value}")
        for page in selectors.run_problems(run, limit=20):
            self.stdout.write(f"  {page.status}: {page.url} — {page.error}")
        if run.status == RunStatus.FAILED:
            raise CommandError(f"Run #{run.pk} failed: {run.last_error}")

    def _run(self, options: dict) -> ScrapeRun:
        if options["resume"]:
            run = ScrapeRun.objects.filter(pk=options["resume"]).first()
            if run is None:
                raise CommandError(f"There is no run #{options['resume']}.")
            self.stdout.write(f"Resuming run #{run.pk}.")
            return services.run_reopen(run)
        if not options["base_url"]:
            raise CommandError("--base-url is required (or --resume RUN_ID).")
        scope = {
            "source": options["source"],
            "base_url": options["base_url"],
            "makes": _split(options["makes"]),
            "years": _split(options["years"]),
            "limit": options["limit"],
        }
        try:
            if not options["new"]:
                unfinished = services.run_find_unfinished(**scope)
                if unfinished:
                    self.stdout.write(f"Resuming unfinished run #{unfinished.pk} of the same scope.")
                    return unfinished
            return services.run_create(**scope, rate_per_second=options["rate"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc

    def _drive(self, run: ScrapeRun, *, progress: bool) -> ScrapeRun:
        if not progress:
            return services.run_drive(run.pk)
        from tqdm import tqdm

        with tqdm(desc=f"run #{run.pk}", unit="page", file=sys.stderr, dynamic_ncols=True) as bar:

            def on_progress(current: ScrapeRun) -> None:
                finished = current.pages_done + current.pages_failed + current.pages_skipped
                bar.total = finished + current.pages_pending
                bar.n = finished
                bar.set_postfix(models=current.models_created, images=current.images_saved, failed=current.pages_failed)
                bar.refresh()

            return services.run_drive(run.pk, on_progress=on_progress)
