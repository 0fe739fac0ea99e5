"""Request body cap: an over-size body is refused from its Content-Length, before any of it is read.

Django's DATA_UPLOAD_MAX_MEMORY_SIZE leaves out file parts, and the per-photo byte limit is checked
only once the whole body has been streamed to temporary files. Under WSGI a body sent without a
Content-Length (chunked) is never read by Django or DRF; under ASGI, Django reads the whole body before
any middleware runs, so ``carsite.asgi`` stops reading it at the cap instead.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from carsite.errors import error_body

REQUEST_TOO_LARGE = "request_too_large"


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def too_large_response(path: str, length: int | None, request: HttpRequest | None = None) -> HttpResponse:
    """413 in the API's error shape under /api/, a page elsewhere; ``length`` None: a body of unknown size."""
    limit = settings.CARSITE_REQUEST_MAX_BYTES
    if length is None:
        message = f"The request is larger than the limit of {_megabytes(limit)}."
    else:
        message = f"The request is {_megabytes(length)}; the limit is {_megabytes(limit)}."
    if path.startswith("/api/"):
        return JsonResponse(error_body(REQUEST_TOO_LARGE, message), status=413)
    page = render_to_string("request_too_large.html", {"message": message, "retry_url": path}, request=request)
    return HttpResponse(page, status=413)


def declared_length(value: str | bytes | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = declared_length(request.META.get("CONTENT_LENGTH"))
        if length > settings.CARSITE_REQUEST_MAX_BYTES:
            return too_large_response(request.path, length, request)
        return self.get_response(request)
