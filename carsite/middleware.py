"""Request body cap: an over-size body is refused from its Content-Length, before any of it is read.

Django's DATA_UPLOAD_MAX_MEMORY_SIZE leaves out file parts, and the per-photo byte limit is checked
only once the whole body has been streamed to temporary files. A body sent without a Content-Length
(chunked) is never read by Django or DRF, so only the header needs checking.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

REQUEST_TOO_LARGE = "request_too_large"


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.CARSITE_REQUEST_MAX_BYTES
        if length > limit:
            return self._too_large(request, length, limit)
        return self.get_response(request)

    @staticmethod
    def _too_large(request: HttpRequest, length: int, limit: int) -> HttpResponse:
        message = f"The request is {_megabytes(length)}; the limit is {_megabytes(limit)}."
        if request.path.startswith("/api/"):
            return JsonResponse({"error": {"code": REQUEST_TOO_LARGE, "message": message}}, status=413)
        page = render_to_string("request_too_large.html", {"message": message}, request=request)
        return HttpResponse(page, status=413)
