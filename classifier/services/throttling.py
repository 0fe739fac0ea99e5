"""Upload throttling: one allowance per client, counted in photos, shared by the upload page and the API.

Anonymous callers are counted by address (REMOTE_ADDR, or the X-Forwarded-For entry vouched for by the
``TRUSTED_PROXY_COUNT`` proxies in front), signed-in and token users by account (``classify_anon`` and
``classify_user`` rates). A batch of ten photos takes ten. The counts live in the default cache; while
it is unreachable nothing is counted and every request is let through (an outage of the cache's Redis
must not refuse every upload).
"""

import logging
from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class UploadThrottled(Exception):
    def __init__(self, wait: float | None) -> None:
        super().__init__("Too many uploads from this client.")
        self.wait = wait


def _signed_in(request: Any) -> bool:
    user = getattr(request, "user", None)
    return user is not None and user.is_authenticated


def _rate_of(scope: str) -> str | None:
    """The configured rate of a scope ("10/min"), read when asked: settings may change while the process runs."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
    return None if rate is None else str(rate)


def _client_ident(throttle: SimpleRateThrottle, request: Any) -> str:
    """Signed-in and token users by account, others by address."""
    return f"user-{request.user.pk}" if _signed_in(request) else f"ip-{throttle.get_ident(request)}"


class PhotoRateThrottle(SimpleRateThrottle):
    def __init__(self) -> None:
        """The rate depends on who is calling: ``get_cache_key`` picks it."""

    def get_cache_key(self, request: Any, view: Any = None) -> str:
        self.scope = "classify_user" if _signed_in(request) else "classify_anon"
        ident = _client_ident(self, request)
        self.rate = _rate_of(self.scope)
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_photos(self, request: Any, photos: int) -> bool:
        """Count ``photos`` uploads against the caller's allowance; False, counting nothing, when they exceed it."""
        self.key = self.get_cache_key(request)
        if self.num_requests is None or self.duration is None:
            return True  # no rate: not throttled
        self.now = self.timer()
        self.history = [at for at in self.cache.get(self.key, []) if at > self.now - self.duration]
        if len(self.history) + photos > self.num_requests:
            return False
        self.history[:0] = [self.now] * photos
        self.cache.set(self.key, self.history, self.duration)
        return True


def uploads_throttle(request: Any, photos: int) -> None:
    """Take ``photos`` from the caller's upload allowance, or raise ``UploadThrottled`` with the seconds to wait."""
    throttle = PhotoRateThrottle()
    try:
        allowed = throttle.allow_photos(request, photos)
    except Exception as exc:  # whatever the cache backend raises when its server is down
        logger.warning("upload throttle not counting: the cache is unavailable (%s)", exc)
        return
    if not allowed:
        raise UploadThrottled(throttle.wait())


class FeedbackRateThrottle(SimpleRateThrottle):
    """Feedback answers per client (scope "feedback"): signed-in visitors by account, others by address."""

    scope = "feedback"

    def get_rate(self) -> str | None:
        return _rate_of(self.scope)

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": _client_ident(self, request)}

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # whatever the cache backend raises when its server is down
            logger.warning("feedback throttle not counting: the cache is unavailable (%s)", exc)
            return True
