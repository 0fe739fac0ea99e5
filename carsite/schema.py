"""OpenAPI generation: every operation also documents the error answers DRF really gives it.

Every error body is the API's one shape (``ErrorSerializer``, built by ``carsite.errors``); answers a
view gives on purpose (409, 413, …) are declared on the view with ``extend_schema`` and are kept as they are.
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS

from carsite.permissions import StaffModelPermissionsOrReadOnly

ErrorSerializer = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorBody",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(
                    required=False, help_text="Validation errors only: each refused field's messages."
                ),
            },
        )
    },
)

WRITE_METHODS = ("POST", "PUT", "PATCH")


class AutoSchema(SpectacularAutoSchema):
    def get_auth(self) -> list[dict]:
        auths = super().get_auth()
        # Anyone may read the catalog: credentials are optional there.
        permissions = self.view.get_permissions()
        readable = any(isinstance(permission, StaffModelPermissionsOrReadOnly) for permission in permissions)
        if readable and self.method in SAFE_METHODS and {} not in auths:
            auths.append({})
        return auths

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code, description in self._error_answers().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=description), code
                )
        return responses

    def _error_answers(self) -> dict[str, str]:
        answers = {}
        is_list = self.method == "GET" and self._is_list_view()
        has_query = is_list and bool(self._get_filter_parameters() + self._get_pagination_parameters())
        if self.method in WRITE_METHODS or has_query:
            answers["400"] = "Invalid request: the body or a query parameter is refused."
        # SessionAuthentication comes first, so DRF answers 403 (not 401) for missing or bad credentials.
        answers["403"] = "Bad credentials, or not allowed (writes need staff)."
        if "{" in self.path:
            answers["404"] = "No such object."
        elif is_list and self._get_paginator():
            answers["404"] = "A page number past the last page."
        if self.view.get_throttles():
            answers["429"] = "Too many requests from this client; retry later (Retry-After)."
        return answers
