"""Answer 503, not 500, while the database is down: the API in its JSON error shape, pages with a plain page."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from carsite.errors import error_body

logger = logging.getLogger(__name__)

UNAVAILABLE_MESSAGE = "The service is unavailable at the moment; please try again in a minute."
RETRY_AFTER_SECONDS = "30"


class DatabaseUnavailableMiddleware:
    """Turn a lost or refused database connection raised by a view into a 503 (first in MIDDLEWARE)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.error("database unavailable on %s %s: %s", request.method, request.path, exception)
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(error_body("service_unavailable", UNAVAILABLE_MESSAGE), status=503)
        else:
            response = HttpResponse(
                "<!doctype html><title>Service unavailable</title>"
                f"<h1>Service unavailable</h1><p>{UNAVAILABLE_MESSAGE}</p>",
                content_type="text/html; charset=utf-8",
                status=503,
            )
        response["Retry-After"] = RETRY_AFTER_SECONDS
        return response
