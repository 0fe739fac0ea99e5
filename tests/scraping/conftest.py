"""Fixtures of the scraping tests: fast scraper settings and real local HTTP sites with faults."""

import sys
from pathlib import Path

import pytest

from bench.devsite import FixtureSite

# The site definitions live next to the tests; make them importable as a plain module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scraping_sites import MAX_IMAGE_BYTES  # noqa: E402


@pytest.fixture(autouse=True)
def scraper_settings(settings):
    """Loopback allowed, no rate limit, tiny timeouts and backoff: faults cost milliseconds, not seconds."""
    settings.SCRAPER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    settings.SCRAPER_RATE_PER_HOST = 0.0
    settings.SCRAPER_BACKOFF_BASE = 0.01
    settings.SCRAPER_RETRIES = 2
    settings.SCRAPER_CONNECT_TIMEOUT = 1.0
    settings.SCRAPER_READ_TIMEOUT = 0.4
    settings.SCRAPER_RETRY_AFTER_MAX = 2.0
    settings.SCRAPER_MAX_IMAGE_BYTES = MAX_IMAGE_BYTES
    settings.SCRAPER_CONTACT_URL = "https://carsite.example/scraper"
    settings.SCRAPER_USER_AGENT = "carsite-scraper/1.0 (+https://carsite.example/scraper)"
    return settings


@pytest.fixture
def site():
    with FixtureSite() as fixture_site:
        yield fixture_site
