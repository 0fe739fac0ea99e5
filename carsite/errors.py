"""The API's one error shape, ``{"error": {"code", "message", "fields"?}}``, for every API error.

DRF calls ``api_exception_handler`` (settings ``EXCEPTION_HANDLER``) for whatever a view raises; the 404
of a URL under /api/ that matches no route, the request-size middleware and the database-outage answer
build the same body with ``error_body``. ``fields`` (validation errors only) maps each refused field to its messages.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _first_message(detail: Any) -> str:
    """The first message in a DRF error detail (a string, a list or a dict of them, nested)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key in ("non_field_errors", "detail") else f"{key}: {message}"
    if isinstance(detail, list | tuple):
        return _first_message(detail[0]) if detail else ""
    return str(detail)


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response  # not an API error: a 500, which Django reports
    fields = exc.detail if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict) else None
    code = "invalid" if fields is not None else _code_of(exc)
    response.data = error_body(code, _first_message(exc.detail), fields)
    return response


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)
