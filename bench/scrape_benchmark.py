"""Crawl a generated local site in The Car Connection layout and report scraper throughput.

    .venv/bin/python bench/scrape_benchmark.py [--models 240] [--images-per-model 2]

Uses a temporary SQLite database and MEDIA_ROOT (nothing of var/ is touched), in-process tasks,
and no rate limit. Prints pages/s and images/s end to end, and CPU ms per spec-page parse.
Targets: parsing ≤ 20 ms CPU per spec page; ≥ 20 pages/s end to end on loopback.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def _configure(workdir: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "carsite.settings",
            "DEBUG": "1",
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "MEDIA_ROOT": str(workdir / "media"),
            "CELERY_BROKER_URL": "",
            "SCRAPER_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
            "SCRAPER_RATE_PER_HOST": "0",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# Spec names of a real model-year page beyond the ones carsite types: kept raw, reported as unparsed.
FILLER_SPEC_NAMES = [
    "Fuel Tank Capacity, Approx (gal)",
    "Wheelbase (in)",
    "Track Width, Front (in)",
    "Track Width, Rear (in)",
    "Turning Diameter - Curb to Curb (ft)",
    "Curb Weight - Automatic (lbs)",
    "Cargo Volume to Seat 1 (ft³)",
    "Front Head Room (in)",
    "Front Leg Room (in)",
    "Rear Head Room (in)",
    "Rear Leg Room (in)",
    "Brake Type",
    "Brake ABS System",
    "Steering Type",
    "Suspension Type - Front",
    "Suspension Type - Rear",
    "Basic Miles/km",
    "Basic Years",
    "Corrosion Miles/km",
    "Drivetrain Years",
]


def _build_site(site, models: int, images_per_model: int):
    from bench.devsite import TccCar, build_tcc_site, photo

    makes = ["Audi", "BMW", "Chevrolet", "Ford", "Honda", "Hyundai", "Kia", "Mazda", "Nissan", "Subaru", "Toyota"]
    cars = []
    for number in range(models):
        make = makes[number % len(makes)]
        rows = [
            ("SAE Net Horsepower @ RPM", f"{150 + number % 300} @ {5000 + number % 10 * 100}"),
            ("SAE Net Torque @ RPM", f"{150 + number % 250} @ 1600-4500"),
            ("Displacement", f"{1 + number % 5}.{number % 10}L/{100 + number}"),
            ("Engine Type", ["Gas V6", "Gas I4", "Electric", "Gas/Electric I-4"][number % 4]),
            ("Gas Mileage", f"{18 + number % 20} mpg City/{25 + number % 15} mpg Hwy"),
            (
                "Drivetrain",
                ["Front Wheel Drive", "All Wheel Drive", "Rear Wheel Drive", "Four Wheel Drive"][number % 4],
            ),
            ("Transmission", "8-Speed Automatic w/OD"),
            ("Passenger Capacity", str(2 + number % 7)),
            ("Passenger Doors", "4"),
            ("Body Style", ["4dr Car", "Sport Utility", "Crew Cab Pickup", "2dr Car"][number % 4]),
            ("EPA Classification", "Midsize Cars"),
            ("Front Wheel Size (in)", "18 x 8"),
            ("Width, Max w/o mirrors (in)", "73.0"),
            ("Height, Overall (in)", "56.2"),
            ("Length, Overall (in)", "187.5"),
        ]
        # Real spec pages list well over a hundred rows: repeat the untyped ones in trim sections.
        for section in range(6):
            rows += [(f"{name} [{section}]", f"{number % 97}.{section}") for name in FILLER_SPEC_NAMES]
        cars.append(
            TccCar(
                make=make,
                make_slug=make.lower(),
                model=f"Model {number}",
                model_slug=f"model-{number}",
                year=2023,
                msrp=f"${25_000 + number * 10:,}",
                rows=rows,
                images=[photo(number * 100 + i) for i in range(images_per_model)],
            )
        )
    build_tcc_site(site, cars)
    # Real pages carry a lot of markup around the data; pad every page to a realistic weight.
    padding = ("<div class='ad'><script>var tracking = '" + "x" * 900 + "';</script></div>") * 60
    for resource in site.resources.values():
        if resource.content_type.startswith("text/html"):
            resource.body = resource.body.replace(b"</body>", padding.encode() + b"</body>")
    return cars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=240, help="model pages (each with a spec page and a gallery)")
    parser.add_argument("--images-per-model", type=int, default=2)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="carsite-scrape-bench-"))
    try:
        _configure(workdir)
        from bench.devsite import FixtureSite, tcc_spec_path
        from catalog.models import CarImage, CarModel
        from scraping import services
        from scraping.adapters import get_adapter
        from scraping.cleaning import clean_specs

        with FixtureSite() as site:
            cars = _build_site(site, args.models, args.images_per_model)
            adapter = get_adapter("tcc")
            spec_pages = [site.resources[tcc_spec_path(car)].body.decode() for car in cars]
            page_kib = sum(len(p) for p in spec_pages) / len(spec_pages) / 1024

            started_cpu = time.process_time()
            for number, html in enumerate(spec_pages):
                clean_specs(adapter.parse_spec(site.url(tcc_spec_path(cars[number])), html).rows)
            parse_ms = (time.process_time() - started_cpu) * 1000 / len(spec_pages)

            run = services.run_create(source="tcc", base_url=site.base_url, years=[2023], rate_per_second=0)
            started_wall, started_cpu = time.perf_counter(), time.process_time()
            run = services.run_drive(run.pk)
            wall = time.perf_counter() - started_wall
            cpu = time.process_time() - started_cpu

        pages = run.pages_done + run.pages_skipped + run.pages_failed
        html_pages = pages - run.images_saved - run.images_skipped - run.images_failed
        print(
            f"site: {len(cars)} model pages, {len(cars)} spec pages (~{page_kib:.0f} KiB each), "
            f"{len(cars)} galleries, {len(cars) * args.images_per_model} images; rate limit lifted; SQLite"
        )
        print(
            f"run #{run.pk}: status={run.status} pages={pages} (html {html_pages}) failed={run.pages_failed} "
            f"models={CarModel.objects.count()} images={CarImage.objects.count()}"
        )
        print(f"spec page parse+clean: {parse_ms:.2f} ms CPU per page (target <= 20)")
        print(
            f"end to end: {wall:.2f} s wall, {pages / wall:.1f} pages/s (target >= 20), "
            f"{run.images_saved / wall:.1f} images/s, {cpu * 1000 / pages:.1f} ms CPU per page (all work)"
        )
        if run.status != "done" or run.pages_failed:
            sys.exit("benchmark run did not finish cleanly")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
