"""The admin site, with failed sign-ins counted per account and per address and refused past a limit.

Counts live in the cache (Redis in production, so every web worker sees them) for a fixed window from the
first failure. While an account or an address is over its limit the password is not even checked. While
the cache is unreachable sign-ins are not limited (and say so in the log) rather than all refused.
"""

import hashlib
import logging

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import BaseThrottle

RATE_LIMITED = "rate_limited"
logger = logging.getLogger(__name__)


def _counters(request: HttpRequest, username: str) -> list[tuple[str, int]]:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    address = BaseThrottle().get_ident(request)  # the client address exactly as the API throttles see it
    return [
        (f"admin-login-failures:account:{account}", settings.ADMIN_LOGIN_FAILURES_PER_ACCOUNT),
        (f"admin-login-failures:address:{address}", settings.ADMIN_LOGIN_FAILURES_PER_ADDRESS),
    ]


def admin_login_blocked(request: HttpRequest, username: str) -> bool:
    try:
        return any((cache.get(key) or 0) >= limit for key, limit in _counters(request, username))
    except Exception as exc:  # the cache's server is down: sign-ins are not limited meanwhile (logged)
        logger.warning("admin sign-in limits not applied: the cache is unavailable (%s)", exc)
        return False


def admin_login_failed(request: HttpRequest, username: str) -> None:
    try:
        for key, _limit in _counters(request, username):
            cache.add(key, 0, timeout=settings.ADMIN_LOGIN_FAILURE_WINDOW)
            try:
                cache.incr(key)
            except ValueError:  # the window ran out between add and incr
                cache.set(key, 1, timeout=settings.ADMIN_LOGIN_FAILURE_WINDOW)
    except Exception as exc:
        logger.warning("admin sign-in failure not counted: the cache is unavailable (%s)", exc)


def admin_login_succeeded(request: HttpRequest, username: str) -> None:
    """A right password clears its account's count; the address keeps its count, or one valid login would
    reset an attacker's allowance for guessing other accounts."""
    account_key, _limit = _counters(request, username)[0]
    try:
        cache.delete(account_key)
    except Exception as exc:
        logger.warning("admin sign-in count not cleared: the cache is unavailable (%s)", exc)


class RateLimitedAdminAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        RATE_LIMITED: "Too many failed sign-ins for this account or from this address. Please wait %(minutes)s "
        "minutes and try again.",
    }

    def clean(self) -> dict:
        username = self.cleaned_data.get("username") or ""
        if admin_login_blocked(self.request, username):
            raise ValidationError(
                self.error_messages[RATE_LIMITED],
                code=RATE_LIMITED,
                params={"minutes": max(1, settings.ADMIN_LOGIN_FAILURE_WINDOW // 60)},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            admin_login_failed(self.request, username)
            raise
        admin_login_succeeded(self.request, username)
        return cleaned


class CarsiteAdminSite(admin.AdminSite):
    login_form = RateLimitedAdminAuthenticationForm

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if form is not None and form.is_bound and form.has_error(NON_FIELD_ERRORS, RATE_LIMITED):
            response.status_code = 429
            response["Retry-After"] = str(settings.ADMIN_LOGIN_FAILURE_WINDOW)
        return response
