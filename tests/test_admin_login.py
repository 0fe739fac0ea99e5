"""Admin sign-in: failed attempts are counted per account and per address, then refused with a clear 429."""

import pytest
from django.core.cache import cache
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN_URL = "/admin/login/?next=/admin/"
PASSWORD = "pw-right-horse-battery"


@pytest.fixture(autouse=True)
def _fresh_counts():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("curator", password=PASSWORD, is_staff=True)


def _sign_in(client: Client, username: str, password: str):
    return client.post(LOGIN_URL, {"username": username, "password": password, "next": "/admin/"})


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_an_account_is_refused_after_too_many_failures_even_with_the_right_password(settings, staff):
    settings.ADMIN_LOGIN_FAILURES_PER_ACCOUNT = 3
    attacker = Client(REMOTE_ADDR="198.51.100.1")

    assert [_sign_in(attacker, "curator", f"guess-{n}").status_code for n in range(3)] == [200, 200, 200]
    blocked = _sign_in(Client(REMOTE_ADDR="198.51.100.2"), "Curator", PASSWORD)  # any address, any case

    assert blocked.status_code == 429
    assert "Too many failed sign-ins for this account or from this address" in blocked.content.decode()
    assert int(blocked["Retry-After"]) == settings.ADMIN_LOGIN_FAILURE_WINDOW
    assert not _signed_in(attacker)


def test_an_address_is_refused_after_too_many_failures_on_any_accounts(settings, staff):
    settings.ADMIN_LOGIN_FAILURES_PER_ADDRESS = 3
    attacker = Client(REMOTE_ADDR="198.51.100.1")
    for name in ("alice", "bob", "carol"):
        assert _sign_in(attacker, name, "guess").status_code == 200

    assert _sign_in(attacker, "curator", PASSWORD).status_code == 429
    assert not _signed_in(attacker)
    elsewhere = Client(REMOTE_ADDR="198.51.100.9")
    assert _sign_in(elsewhere, "curator", PASSWORD).status_code == 302
    assert _signed_in(elsewhere)


def test_a_right_password_clears_its_accounts_failures(settings, staff):
    settings.ADMIN_LOGIN_FAILURES_PER_ACCOUNT = 3
    for _round in range(2):
        client = Client(REMOTE_ADDR="198.51.100.1")
        assert [_sign_in(client, "curator", "typo").status_code for _ in range(2)] == [200, 200]
        assert _sign_in(client, "curator", PASSWORD).status_code == 302
