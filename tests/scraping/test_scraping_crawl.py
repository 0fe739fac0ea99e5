"""End-to-end crawls of real local sites: the catalog filled exactly, every fault recorded, re-crawls idle."""

import pytest
from django.core.management import CommandError, call_command
from scraping_sites import (
    ALL_CARS,
    AUDI_A4,
    AUDI_A4_2024,
    EXPECTED_MODELS,
    EXPECTED_PROBLEMS,
    build_fault_site,
    catalog_snapshot,
)

from bench.devsite import FixtureSite, build_tcc_site, jsonld_page_html, photo, tcc_image_path, tcc_spec_path
from catalog.models import CarImage, CarModel, Manufacturer, Specification
from scraping import services, tasks
from scraping.models import PageKind, PageRecord, PageStatus, RunStatus, ScrapeRun

pytestmark = pytest.mark.django_db


def _crawl(site, **scope) -> ScrapeRun:
    run = services.run_create(source=scope.pop("source", "tcc"), base_url=site.base_url, **scope)
    return services.run_drive(run.pk)


def _path(url: str, site) -> str:
    return url.removeprefix(site.base_url)


def test_crawl_of_fault_site_fills_catalog_exactly_and_records_every_fault(site):
    build_fault_site(site)
    run = _crawl(site, years=[2023])

    assert run.status == RunStatus.DONE
    assert sorted(Manufacturer.objects.values_list("name", flat=True)) == ["Audi", "Ford", "Kia", "Volkswagen"]
    assert sorted(CarModel.objects.values_list("label", flat=True)) == sorted(EXPECTED_MODELS)
    for label, expected in EXPECTED_MODELS.items():
        car_model = CarModel.objects.get(label=label)
        for field, value in expected["car_model"].items():
            assert getattr(car_model, field) == value, (label, field)
        spec = Specification.objects.get(car_model=car_model)
        for field, value in expected["specs"].items():
            assert getattr(spec, field) == value, (label, field)
        assert spec.source == "tcc"
        stored = sorted(_path(url, site) for url in car_model.images.values_list("source_url", flat=True))
        assert stored == sorted(expected["images"]), label
        for image in car_model.images.all():
            assert image.origin == "scraped" and len(image.sha256) == 64 and len(image.phash) == 16
            assert image.width == 320 and image.height == 240
            assert image.image.storage.exists(image.image.name)

    # Raw rows are all kept, and what could not be read is reported with a reason, not guessed.
    id4 = Specification.objects.get(car_model__label="2023 Volkswagen ID.4")
    assert id4.raw["tcc"]["rows"]["Frobnicator Index"] == "7"
    reasons = {name: reason for name, _value, reason in id4.raw["tcc"]["unparsed"]}
    assert reasons["Frobnicator Index"] == "unknown spec name"
    assert "MPGe" in reasons["Gas Mileage"]
    assert "rpm" in reasons["SAE Net Torque @ RPM"]

    problems = {
        (_path(p.url, site), p.status, p.error_code)
        for p in PageRecord.objects.filter(run=run, status__in=[PageStatus.FAILED, PageStatus.SKIPPED])
    }
    assert problems == EXPECTED_PROBLEMS
    for page in PageRecord.objects.filter(run=run, status=PageStatus.FAILED):
        assert page.error, page.url  # every failure has a readable reason
    assert not PageRecord.objects.filter(run=run, status=PageStatus.PENDING).exists()

    # Retried faults ended in success, each after more than one request.
    assert site.hits["/make/new,audi"] == 2 and site.hits["/volkswagen_id-4"] == 2
    assert site.hits["/make/new,ford"] == 2 and site.hits["/audi_a4/photos/2023_audi_a4"] == 2
    # The private redirect target was refused before any request: only the redirecting URL was hit once.
    assert site.hits["/img/sml/2023_ford_f-150_2_l.jpg"] == 1
    # Out of scope years are not fetched at all; robots.txt is read once.
    assert site.hits[tcc_spec_path(ALL_CARS[1])] == 0
    assert site.hits["/robots.txt"] == 1
    assert all("carsite.example/scraper" in headers.get("user-agent", "") for _path_, headers in site.requests)

    assert run.models_created == 4 and run.specs_saved == 4
    assert run.images_saved == 5 and run.images_skipped == 2 and run.images_failed == 6
    assert run.pages_failed == run.error_count == 8
    assert run.pages_pending == 0

    # A second crawl of the same site changes nothing, and unchanged pages are not re-parsed.
    before = catalog_snapshot()
    requests_before = len(site.requests)
    again = _crawl(site, years=[2023])
    assert again.status == RunStatus.DONE
    assert catalog_snapshot() == before
    assert (again.models_created, again.models_updated, again.specs_saved, again.images_saved) == (0, 0, 0, 0)
    assert again.pages_unchanged >= 10
    conditional = [h for p, h in site.requests[requests_before:] if p == tcc_spec_path(AUDI_A4)]
    assert conditional and "if-none-match" in conditional[0]
    # Images already stored are not downloaded again.
    assert site.hits["/img/sml/2023_audi_a4_1_l.jpg"] == 1


def test_changed_spec_page_is_reapplied_on_recrawl(site):
    build_tcc_site(site, [AUDI_A4])
    _crawl(site)
    spec_path = tcc_spec_path(AUDI_A4)
    page = site.resources[spec_path]
    page.body = page.body.replace(b"201 @ 5000", b"204 @ 5100").replace(b"$39,100", b"$39,900")
    run = _crawl(site)
    car_model = CarModel.objects.get(label="2023 Audi A4")
    assert (car_model.specs.horsepower, car_model.specs.horsepower_rpm, car_model.msrp_usd) == (204, 5100, 39900)
    assert (run.models_created, run.models_updated, run.specs_saved) == (0, 1, 1)
    assert CarModel.objects.count() == 1 and Specification.objects.count() == 1


def test_scope_makes_and_limit(site):
    build_tcc_site(site, ALL_CARS[:4])
    run = _crawl(site, makes=["Volkswagen"])
    assert list(CarModel.objects.values_list("label", flat=True)) == ["2023 Volkswagen ID.4"]
    assert not PageRecord.objects.filter(run=run, kind=PageKind.MAKE, url__contains="audi").exists()

    limited = _crawl(site, limit=1, makes=["audi"])
    assert PageRecord.objects.filter(run=limited, kind=PageKind.SPEC).count() == 1
    assert CarModel.objects.filter(manufacturer__name="Audi").count() == 1


def test_cancelled_run_resumes_where_it_stopped(site):
    build_tcc_site(site, [AUDI_A4, KIA_TELLURIDE := ALL_CARS[6]])
    run = services.run_create(source="tcc", base_url=site.base_url)

    def cancel_after_specs(current: ScrapeRun) -> None:
        if CarModel.objects.exists():
            services.run_cancel(current)

    stopped = services.run_drive(run.pk, on_progress=cancel_after_specs, progress_interval=0)
    assert stopped.status == RunStatus.CANCELLED
    assert PageRecord.objects.filter(run=run, status=PageStatus.PENDING).exists()
    hits_before = sum(site.hits.values())

    resumed = services.run_drive(services.run_reopen(stopped).pk)
    assert resumed.status == RunStatus.DONE
    assert sorted(CarModel.objects.values_list("label", flat=True)) == [
        "2023 Audi A4",
        f"2023 Kia {KIA_TELLURIDE.model}",
    ]
    assert CarImage.objects.count() == 3
    # Pages finished before the cancel were not fetched again.
    done_before = sum(site.hits.values()) - hits_before
    assert done_before < PageRecord.objects.filter(run=run).count()
    assert site.hits["/new-cars"] == 1


def test_jsonld_site(site):
    site.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
    item_list = {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "itemListElement": [{"@type": "ListItem", "position": 1, "url": "/cars/ioniq-5"}],
    }
    site.add("/", jsonld_page_html(item_list, "Cars") + "<a href='/cars/golf'>Golf</a><a href='/about'>About</a>")
    site.add("/about", "<html><body>About us</body></html>")
    site.add("/img/ioniq-1.png", photo(21, fmt="PNG"), content_type="image/png")
    site.add("/img/ioniq-2.webp", photo(22, fmt="WEBP"), content_type="image/webp")
    site.add(
        "/cars/ioniq-5",
        jsonld_page_html(
            {
                "@context": "https://schema.org",
                "@type": ["Product", "Car"],
                "name": "2024 Hyundai IONIQ 5",
                "brand": {"@type": "Brand", "name": "Hyundai"},
                "model": "IONIQ 5",
                "vehicleModelDate": "2024",
                "bodyType": "SUV",
                "driveWheelConfiguration": "https://schema.org/AllWheelDriveConfiguration",
                "numberOfDoors": 4,
                "seatingCapacity": {"@type": "QuantitativeValue", "value": 5},
                "vehicleTransmission": "1-Speed Automatic",
                "vehicleEngine": {
                    "@type": "EngineSpecification",
                    "fuelType": "Electric",
                    "enginePower": {"@type": "QuantitativeValue", "value": 320, "unitCode": "BHP"},
                    "torque": {"@type": "QuantitativeValue", "value": 446, "unitCode": "F17"},
                },
                "width": {"@type": "QuantitativeValue", "value": 74.4, "unitCode": "INH"},
                "height": {"@type": "QuantitativeValue", "value": 160.0, "unitCode": "CMT"},
                "additionalProperty": [
                    {"@type": "PropertyValue", "name": "Electric Range", "value": 260, "unitText": "mi"}
                ],
                "offers": {"@type": "Offer", "price": 52600, "priceCurrency": "USD"},
                "image": ["/img/ioniq-1.png", {"@type": "ImageObject", "contentUrl": "/img/ioniq-2.webp"}],
            },
            "IONIQ 5",
        ),
    )
    site.add(
        "/cars/golf",
        jsonld_page_html(
            {
                "@type": "Vehicle",
                "manufacturer": "Volkswagen",
                "model": {"@type": "ProductModel", "name": "Golf GTI"},
                "modelDate": "2023-01-01",
                "fuelEfficiency": [
                    {"@type": "QuantitativeValue", "value": 24, "unitText": "mpg", "name": "City"},
                    {"@type": "QuantitativeValue", "value": 34, "unitText": "mpg", "name": "Hwy"},
                ],
                "fuelType": "Gasoline",
                "vehicleEngine": {"engineType": "I-4", "engineDisplacement": {"value": 2.0, "unitCode": "LTR"}},
                "offers": {"price": "31,965", "priceCurrency": "USD"},
            }
        ),
    )
    run = _crawl(site, source="jsonld")
    assert run.status == RunStatus.DONE
    ioniq = CarModel.objects.get(label="2024 Hyundai IONIQ 5")
    assert (ioniq.msrp_usd, ioniq.body_style) == (52600, "suv")
    spec = ioniq.specs
    assert (spec.engine_type, spec.horsepower, spec.torque_lb_ft, spec.drivetrain) == ("electric", 320, 446, "AWD")
    assert (spec.doors, spec.seats, spec.electric_range_mi, str(spec.width_in)) == (4, 5, 260, "74.4")
    assert spec.height_in is None  # centimetres are reported, not read as inches
    assert ["Height (CMT)", "160.0", "unknown spec name"] in spec.raw["jsonld"]["unparsed"]
    assert ioniq.images.count() == 2
    golf = CarModel.objects.get(label="2023 Volkswagen Golf GTI")
    assert (golf.msrp_usd, golf.specs.mpg_city, golf.specs.mpg_highway) == (31965, 24, 34)
    assert (golf.specs.engine_type, golf.specs.cylinders, str(golf.specs.displacement_l)) == ("gas", 4, "2.0")
    about = PageRecord.objects.get(run=run, url=site.url("/about"))
    assert (about.status, about.error_code) == (PageStatus.SKIPPED, "not_a_car_page")


def test_scrape_command_prints_summary_and_resumes_same_scope(site, capsys):
    build_tcc_site(site, [AUDI_A4])
    call_command("scrape", "--source", "tcc", "--base-url", site.base_url, "--years", "2023", "--rate", "0")
    out = capsys.readouterr()
    assert "models created:" in out.out and "images saved: 2" in out.out
    assert "run #" in out.err  # the progress bar goes to stderr
    run = ScrapeRun.objects.get()
    assert run.status == RunStatus.DONE and run.rate_per_second == 0
    # A finished run is not resumed by a new command with the same scope: a new run is made.
    call_command("scrape", "--base-url", site.base_url, "--years", "2023", "--no-progress")
    assert ScrapeRun.objects.count() == 2
    # An interrupted one is.
    ScrapeRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    call_command("scrape", "--base-url", site.base_url, "--years", "2023", "--no-progress")
    assert ScrapeRun.objects.count() == 2
    assert f"Resuming unfinished run #{run.pk}" in capsys.readouterr().out


def test_recrawl_task_repeats_successful_runs_with_conditional_requests(site, django_capture_on_commit_callbacks):
    build_tcc_site(site, [AUDI_A4])
    first = _crawl(site, years=[2023])
    with django_capture_on_commit_callbacks(execute=True):
        new_ids = tasks.scrape_recrawl.delay().get()
    assert len(new_ids) == 1 and new_ids[0] != first.pk
    recrawl = ScrapeRun.objects.get(pk=new_ids[0])
    assert recrawl.status == RunStatus.DONE and recrawl.years == [2023]
    assert recrawl.pages_unchanged >= 4 and recrawl.specs_saved == 0
    assert CarModel.objects.count() == 1 and CarImage.objects.count() == 2


def test_unreachable_index_fails_the_run_with_a_readable_error(site):
    site.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
    run = _crawl(site)  # no /new-cars page: 404
    assert run.status == RunStatus.FAILED and run.finished_at is not None
    assert "HTTP 404" in run.last_error and run.pages_failed == 1
    with pytest.raises(CommandError, match="failed"):
        call_command("scrape", "--base-url", site.base_url, "--no-progress", "--new")


def test_photo_shared_by_two_model_years_stays_with_one_across_crawls(site):
    build_tcc_site(site, [AUDI_A4, AUDI_A4_2024])
    gallery_2024 = site.resources["/audi_a4/photos/2024_audi_a4"]
    gallery_2024.body = gallery_2024.body.replace(b"</div>", b'<img src="/img/sml/2023_audi_a4_1_s.jpg"></div>', 1)
    _crawl(site)
    first = catalog_snapshot()
    shared = [row for row in first["images"] if row[1].endswith("2023_audi_a4_1_l.jpg")]
    assert len(shared) == 1
    _crawl(site)
    assert catalog_snapshot() == first


def test_weekly_recrawl_is_scheduled(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["scraping-recrawl"]
    assert entry["task"] == tasks.scrape_recrawl.name == "scraping.recrawl"
    assert entry["schedule"].day_of_week == {1}  # Mondays, by default


def test_links_to_other_hosts_are_not_followed_but_images_there_are_fetched(site, scraper_settings):
    build_tcc_site(site, [AUDI_A4])
    with FixtureSite(host="127.0.0.2") as other:
        scraper_settings.SCRAPER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1", "127.0.0.2"]  # the guard would let it through
        other.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
        other.add("/make/new,elsewhere", "<html><body><div class='name'><a href='/x'>X</a></div></body></html>")
        other.add("/img/sml/cdn_1_l.jpg", photo(31), content_type="image/jpeg")
        foreign_make, cdn_image = other.url("/make/new,elsewhere"), other.url("/img/sml/cdn_1_l.jpg")
        index = site.resources["/new-cars"]
        index.body = index.body.replace(b"</ul>", f'<li><a href="{foreign_make}">X</a></li></ul>'.encode())
        gallery = site.resources["/audi_a4/photos/2023_audi_a4"]
        thumbnail = cdn_image.replace("_l.jpg", "_s.jpg")
        gallery.body = gallery.body.replace(b"</div>", f'<img src="{thumbnail}"></div>'.encode(), 1)
        run = _crawl(site)
    assert run.status == RunStatus.DONE
    assert other.hits["/make/new,elsewhere"] == 0
    assert not PageRecord.objects.filter(url=foreign_make).exists()
    # An image on another host (a CDN) leads nowhere else and is still fetched.
    assert other.hits["/img/sml/cdn_1_l.jpg"] == 1
    assert set(CarImage.objects.values_list("source_url", flat=True)) == {
        site.url(tcc_image_path(AUDI_A4, 1)),
        site.url(tcc_image_path(AUDI_A4, 2)),
        cdn_image,
    }


def test_a_pages_links_are_capped_and_the_cap_is_reported(site, scraper_settings):
    scraper_settings.SCRAPER_MAX_LINKS_PER_PAGE = 10
    site.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
    site.add(
        "/new-cars",
        "<html><body>" + "".join(f'<a href="/make/new,m{n}">M{n}</a>' for n in range(30)) + "</body></html>",
    )
    for n in range(30):
        site.add(f"/make/new,m{n}", "<html><body><p>No models yet.</p></body></html>")
    run = _crawl(site)
    assert run.status == RunStatus.DONE
    assert PageRecord.objects.filter(run=run, kind=PageKind.MAKE).count() == 10
    assert sum(site.hits[f"/make/new,m{n}"] for n in range(30)) == 10
    index = PageRecord.objects.get(run=run, kind=PageKind.INDEX)
    assert (index.status, index.error_code, len(index.links)) == (PageStatus.DONE, "links_capped", 10)
    assert (
        run.last_error == f"{index.url}: 30 links found; only the first 10 are followed (SCRAPER_MAX_LINKS_PER_PAGE)."
    )
