"""The classification pages in a real browser: headless Chromium against the live server."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from classifier.models import Classification, Feedback

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def page(live_server, monkeypatch):
    if not shutil.which(CHROMIUM):
        message = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the browser tests, never skip them
        pytest.skip(message)
    # Playwright's sync API runs an event loop in this thread; scoped to the test so nothing else sees it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)  # the first classification loads both models
        # Chromium reports on the console whatever the Content-Security-Policy blocked: no test may see any.
        blocked: list[str] = []
        page.on("console", lambda message: "Content Security Policy" in message.text and blocked.append(message.text))
        yield page
        # Database work done while Playwright's loop runs gets its own connection (Django keeps them per
        # async context); close it here, or the test database cannot be dropped at the end of the session.
        from django.db import connections

        connections.close_all()
        context.close()
        browser.close()
    assert blocked == []


def test_upload_result_feedback_and_curated_spec(
    page,
    live_server,
    transactional_db,
    active_gate,
    active_classifier,
    acura_catalog,
    shared_data,
    tmp_path,
    django_user_model,
):
    from catalog.services import car_image_add, car_model_get_or_create, specification_upsert
    from tests.classification.conftest import MDX_EXTERIOR

    images = shared_data / "car-photos" / "images"
    mdx = acura_catalog["MDX"]
    mdx_2019, _ = car_model_get_or_create(make="Acura", model="MDX", year=2019, defaults={"msrp_usd": 44400})
    specification_upsert(mdx_2019, values={"horsepower": 290, "seats": 7}, source="tests")
    for name, view in (
        ("Acura_MDX_2011_42_18_300_37_6_78_68_191_16_AWD_7_4_SUV_BqQ.jpg", "exterior"),
        ("Acura_MDX_2019_44_18_290_35_6_77_67_196_20_FWD_7_4_SUV_yPQ.jpg", "interior"),
    ):
        car_image_add(mdx, data=(images / name).read_bytes(), origin="imported", view=view)

    # A text file dressed up as a photo: the server refuses it and the page says why.
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo at all\n" * 10)
    page.goto(f"{live_server.url}/classify/")
    page.set_input_files("input[type=file]", str(fake))
    page.click("#upload-submit")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "not an image" in page.inner_text("#upload-error")
    assert Classification.objects.count() == 0

    # A real Acura MDX press photo: the result page names the model line (the classifier does not decide
    # the year), with the price and specifications of its newest year, and the visitor can switch years.
    page.set_input_files("input[type=file]", str(shared_data / "car-photos" / "images" / MDX_EXTERIOR))
    started = time.perf_counter()
    page.click("#upload-submit")
    page.wait_for_selector("[data-testid=best-match]")
    upload_to_answer_ms = (time.perf_counter() - started) * 1000
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.inner_text("[data-testid=best-match]") == "Acura MDX"
    shown = ".year-facts:not([hidden]) "
    assert page.inner_text(shown + "[data-testid=msrp]") == "$49,550"
    assert "290 hp" in page.inner_text(shown + "[data-spec=horsepower]")
    assert page.inner_text("[data-testid=msrp-range]") == "MSRP across model years: $44,400 – $49,550"
    page.select_option("[data-testid=year-select]", "2019")
    assert page.inner_text(shown + "[data-testid=msrp]") == "$44,400"
    assert page.locator(shown + "[data-spec=seats]").inner_text().endswith("7")
    page.select_option("[data-testid=year-select]", "2023")
    assert "%" in page.inner_text("[data-testid=confidence]")
    assert page.locator("[data-testid=alternatives] li").count() == 4
    assert "2023" not in page.inner_text("[data-testid=alternatives]")  # model lines, no year claimed
    assert page.locator("[data-testid=exterior-gallery] img").count() == 1
    assert page.locator("[data-testid=interior-gallery] img").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "result-page.png"), full_page=True)
    result_url = page.url
    # The same page on a phone: one column, nothing sticking out sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "result-page-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1100, "height": 900})

    # The visitor confirms the answer.
    page.click("[data-testid=confirm]")
    page.wait_for_selector("[data-testid=feedback-thanks]")
    feedback = Feedback.objects.get()
    assert (feedback.car_model.label, feedback.is_confirmation) == ("2023 Acura MDX", True)

    # The visitor's recent photos list the upload.
    page.goto(f"{live_server.url}/classify/")
    assert "Acura MDX" in page.inner_text(".recent")

    # With the models loaded, the same photo again: how long the visitor waits for the answer (a figure to
    # read in the artefact, not a timed assertion).
    page.set_input_files("input[type=file]", str(shared_data / "car-photos" / "images" / MDX_EXTERIOR))
    started = time.perf_counter()
    page.click("#upload-submit")
    page.wait_for_selector("[data-testid=best-match]")
    warm_ms = (time.perf_counter() - started) * 1000
    figures = (
        f"upload to answer in the browser: {upload_to_answer_ms:.0f} ms first (models load), {warm_ms:.0f} ms warm"
    )
    (ARTIFACTS / "upload-to-answer.txt").write_text(figures + "\n")
    print(figures)

    # A curator corrects the horsepower in the admin; the result page shows the new figure.
    django_user_model.objects.create_superuser("curator", "curator@example.com", "a-long-curator-password")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "a-long-curator-password")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/catalog/carmodel/{acura_catalog['MDX'].pk}/change/")
    page.fill("input[name='specs-0-horsepower']", "305")
    page.click("input[name='_save']")
    page.wait_for_selector(".messagelist .success")
    page.goto(result_url)
    assert "305 hp" in page.inner_text(".year-facts:not([hidden]) [data-spec=horsepower]")


def test_phone_sized_upload_page(page, live_server, transactional_db):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/classify/")

    file_input = page.locator("input[type=file]")
    assert file_input.get_attribute("accept") == "image/*"
    # Nothing sticks out sideways on a phone screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("#dropzone").is_visible()


def test_result_page_turns_from_progress_into_result_without_reload(
    page, live_server, transactional_db, active_gate, active_classifier, mdx_photo
):
    from unittest import mock

    from classifier.services.execution import classification_run
    from classifier.services.intake import Upload, classification_create

    # Queue a job without running it, as if the worker had not picked it up yet.
    with mock.patch("classifier.services.intake.classification_enqueue_on_commit"):
        classification = classification_create(Upload(mdx_photo, "mdx.jpg"))
    page.goto(f"{live_server.url}/classify/{classification.pk}/")
    assert page.get_attribute("[data-testid=result]", "data-outcome") == "pending"
    assert "in the queue" in page.inner_text("#result-panel")
    page.evaluate("window.__sameDocument = true")

    classification_run(classification.pk)

    page.wait_for_selector("[data-testid=best-match]")
    assert page.inner_text("[data-testid=best-match]") == "Acura MDX"
    assert page.evaluate("window.__sameDocument") is True  # swapped in place, no reload


def test_catalog_page_without_own_photos_shows_the_nearest_years_labelled(
    page, live_server, transactional_db, shared_data
):
    from catalog.services import car_image_add, car_model_get_or_create

    images = shared_data / "car-photos" / "images"
    mdx_2023, _ = car_model_get_or_create(make="Acura", model="MDX", year=2023)
    for year, name in (
        (2019, "Acura_MDX_2019_44_18_290_35_6_77_67_196_20_FWD_7_4_SUV_yPQ.jpg"),
        (2011, "Acura_MDX_2011_42_18_300_37_6_78_68_191_16_AWD_7_4_SUV_BqQ.jpg"),
    ):
        car, _ = car_model_get_or_create(make="Acura", model="MDX", year=year)
        car_image_add(car, data=(images / name).read_bytes(), origin="imported", view="exterior")
    page.goto(f"{live_server.url}{mdx_2023.get_absolute_url()}")
    gallery = page.locator("[data-testid=exterior-gallery]")
    assert gallery.locator("img").count() == 2
    assert gallery.locator(".photo-year").all_inner_texts() == ["2019", "2011"]  # nearest year first
    assert "nearest model years" in page.inner_text(".gallery")
    assert "No interior photos yet." in page.inner_text("body")
    page.click("nav.line-years >> text=2019")
    assert page.inner_text("h1") == "2019 Acura MDX"
    assert page.locator("[data-testid=exterior-gallery] .photo-year").count() == 0  # its own photo, unlabelled


def test_abstained_result_offers_its_likely_models_and_one_click_answers(
    page, live_server, transactional_db, active_gate, active_classifier, acura_catalog, mdx_photo, shared_data
):
    from catalog.services import car_image_add
    from classifier.services.execution import classification_run
    from classifier.services.intake import Upload, classification_create

    images = sorted((shared_data / "car-photos" / "images").glob("Acura_*.jpg"))
    for name, car in acura_catalog.items():
        saved = 0
        for path in [p for p in images if f"_{name}_" in p.name]:
            # near-copies of a stored photo are skipped: keep going until two distinct ones are in
            saved += car_image_add(car, data=path.read_bytes(), origin="imported", view="exterior").saved
            if saved == 2:
                break
    classification = classification_create(Upload(mdx_photo, "mdx.jpg"))
    classification_run(classification.pk)
    # However sure the model was, this visitor's job is one it did not dare answer.
    Classification.objects.filter(pk=classification.pk).update(abstained=True, predicted_car_model=None)
    page.goto(f"{live_server.url}/admin/login/?next=/classify/{classification.pk}/")
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("staff", "staff@example.com", "a-long-staff-password")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-staff-password")
    page.click("input[type=submit]")
    page.wait_for_selector("[data-testid=candidates]")
    candidates = page.locator("[data-testid=candidate]")
    assert candidates.count() == 3
    assert candidates.nth(0).locator("img").count() == 2
    second = candidates.nth(1)
    picked = second.locator("strong").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "abstained-page.png"), full_page=True)
    second.locator("[data-testid=pick-candidate]").click()
    page.wait_for_selector("[data-testid=feedback-thanks]")
    feedback = Feedback.objects.get()
    assert feedback.car_model.make_and_model == picked and not feedback.is_confirmation


def test_every_page_type_works_under_the_content_security_policy(
    page, live_server, transactional_db, django_user_model
):
    from catalog.services import car_model_get_or_create
    from classifier.services.intake import Upload, classification_create
    from tests.classification.conftest import image_bytes

    car_model, _ = car_model_get_or_create(make="Acura", model="MDX", year=2023, defaults={"msrp_usd": 49550})
    job = classification_create(Upload(image_bytes("JPEG", size=(400, 300)), "car.jpg"))
    for path, ready in (
        ("/", "main"),
        ("/catalog/", "main"),
        (car_model.get_absolute_url(), "main"),
        ("/classify/", "#dropzone"),
        (f"/classify/{job.pk}/", "#result-panel"),
        ("/api/docs/", ".swagger-ui .info .title"),  # rendered by Swagger UI's script: it ran
    ):
        response = page.goto(f"{live_server.url}{path}")
        assert response.headers["content-security-policy"].startswith("default-src 'self'"), path
        page.wait_for_selector(ready)

    django_user_model.objects.create_superuser("curator", "curator@example.com", "a-long-curator-password")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "a-long-curator-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    for path in ("/admin/classifier/classification/", f"/admin/classifier/classification/{job.pk}/change/"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_selector("#content")
    # The admin's own stylesheet (thumbnails) loaded: the photo is sized by a class, not an inline style.
    assert page.evaluate("getComputedStyle(document.querySelector('img.admin-photo-preview')).maxWidth") == "480px"
