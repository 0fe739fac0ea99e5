"""Every kind of page carries the Content-Security-Policy, and none has inline script or style it would block."""

import re

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from catalog import services

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+=", re.IGNORECASE)


@pytest.fixture
def site_pages(db, admin_user) -> dict[str, tuple[Client, str]]:
    from tests.classification.conftest import image_bytes

    car_model, _ = services.car_model_get_or_create(make="Acura", model="MDX", year=2023, defaults={})
    visitor = Client()
    upload = visitor.post("/classify/", {"image": SimpleUploadedFile("car.jpg", image_bytes(), "image/jpeg")})
    staff = Client()
    staff.force_login(admin_user)
    anonymous = Client()
    return {
        "home": (anonymous, "/"),
        "catalog": (anonymous, "/catalog/"),
        "manufacturer": (anonymous, f"/catalog/{car_model.manufacturer.slug}/"),
        "car model": (anonymous, car_model.get_absolute_url()),
        "supported models": (anonymous, "/supported-models/"),
        "upload": (visitor, "/classify/"),
        "result": (visitor, upload["Location"]),
        "not found": (anonymous, "/no-such-page/"),
        "admin login": (anonymous, "/admin/login/"),
        "admin index": (staff, "/admin/"),
        "admin list": (staff, "/admin/classifier/classification/"),
        "admin form": (staff, f"/admin/catalog/carmodel/{car_model.pk}/change/"),
        "API docs": (anonymous, "/api/docs/"),
        "API docs script": (anonymous, "/api/docs/?script="),
        "API schema": (anonymous, "/api/schema/"),
        "API": (anonymous, "/api/v1/models/"),
    }


def test_every_page_carries_the_policy(site_pages):
    for name, (client, url) in site_pages.items():
        response = client.get(url)
        assert response.status_code == (404 if name == "not found" else 200), name
        assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY, name


def test_the_policy_allows_this_site_only():
    directives = dict(part.strip().split(" ", 1) for part in settings.CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in settings.CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in settings.CONTENT_SECURITY_POLICY


def test_html_pages_have_no_inline_script_style_or_handlers(site_pages):
    for name, (client, url) in site_pages.items():
        response = client.get(url)
        if not response["Content-Type"].startswith("text/html"):
            continue
        html = response.content.decode()
        assert INLINE_SCRIPT.findall(html) == [], name
        assert INLINE_STYLE.findall(html) == [], name
        assert INLINE_HANDLER.findall(html) == [], name
