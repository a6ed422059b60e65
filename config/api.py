"""API plumbing shared by every app: authentication, errors, pagination, throttling, auth views.

Error format (every non-2xx answer of the API)::

    {"detail": "human readable summary", "code": "machine_code", "errors": {"field": ["message"]}}

``errors`` maps input field names (dotted for nested input, ``non_field_errors`` for the
request as a whole) to messages; it is empty for errors that are not about a field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


# --- Errors ---------------------------------------------------------------------------------
class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


def _flatten(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF nests errors like the input; clients get one flat ``{"a.b": [..]}`` map instead."""
    if isinstance(errors, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in errors.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            flat.update(_flatten(value, name))
        return flat
    if isinstance(errors, list) and any(isinstance(e, Mapping | list) for e in errors):
        flat = {}
        for index, value in enumerate(errors):
            flat.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    messages = errors if isinstance(errors, list) else [errors]
    return {prefix or "non_field_errors": [str(m) for m in messages]}


def _django_validation_error_as_drf(exc: DjangoValidationError) -> exceptions.ValidationError:
    # Services raise Django's ValidationError with a dict of field errors.
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError(exc.message_dict)
    return exceptions.ValidationError({"non_field_errors": exc.messages})


def _as_api_exception(exc: Exception) -> Exception:
    if isinstance(exc, DjangoValidationError):
        return _django_validation_error_as_drf(exc)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, IntegrityError):
        # A race lost against a database constraint (e.g. two simultaneous subscribes):
        # the checks before the write passed, the constraint decided; nothing was written.
        logger.info("integrity error answered with 409: %s", exc)
        return Conflict("The request conflicts with a concurrent change; retry it.")
    return exc


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django log it and answer 500
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        body = {"detail": "Invalid input.", "code": "invalid", "errors": errors}
    else:
        codes = exc.get_codes()
        body = {
            "detail": str(exc.detail),
            "code": codes if isinstance(codes, str) else exc.default_code,
            "errors": {},
        }
    response.data = body
    return response


class ErrorSerializer(serializers.Serializer):
    """The shape of every error answer (documentation only)."""

    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI entries for the error statuses a view can answer."""
    descriptions = {
        400: "Invalid input; `errors` holds the field errors.",
        401: "Missing or invalid token.",
        403: "Not allowed on this object.",
        404: "Not found, or not yours.",
        409: "Conflicts with the current state.",
        429: "Too many requests.",
    }
    return {c: OpenApiResponse(ErrorSerializer, description=descriptions[c]) for c in codes}


# --- Serializers ----------------------------------------------------------------------------
class StrictFieldsMixin:
    """Reject keys the serializer does not know, instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = {name for name, f in self.fields.items() if not f.read_only}  # type: ignore[attr-defined]
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                raise exceptions.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


# --- Pagination -----------------------------------------------------------------------------
class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):  # type: ignore[no-untyped-def]
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound as exc:
            # A page that does not exist is bad input like any other: 400 with the field.
            raise exceptions.ValidationError({self.page_query_param: [str(exc.detail)]}) from exc


# --- Throttling -----------------------------------------------------------------------------
class AuthRateThrottle(SimpleRateThrottle):
    """Per client IP on the unauthenticated endpoints (guessing passwords, mass sign-ups)."""

    scope = "auth"

    def get_rate(self) -> str:
        # Read at request time, so a deployment (or a test) can change it in settings.
        return settings.API_AUTH_THROTTLE_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# --- Fields ---------------------------------------------------------------------------------
def _check_storable(value: Any, path: str = "") -> None:
    """Refuse what the databases cannot store: NUL characters and lone surrogates."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, path)
            _check_storable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}.{index}" if path else str(index))
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise serializers.ValidationError(f"invalid unicode at {path or 'top level'}") from exc
        if "\x00" in value:
            raise serializers.ValidationError(f"NUL character at {path or 'top level'}")


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON object (not a list or a scalar), bounded in size, storable by every database."""

    default_error_messages = {
        "not_an_object": "Expected a JSON object.",
        "too_large": "At most {max_bytes} bytes once serialised.",
    }

    def __init__(self, *, max_bytes: int = 65_536, **kwargs: Any) -> None:
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        import json

        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        _check_storable(value)
        if len(json.dumps(value)) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        return value


@extend_schema_field(
    {
        "anyOf": [{"type": "string", "format": "decimal"}, {"type": "number"}],
        "description": "A decimal, as a JSON string (exact) or number.",
    }
)
class DecimalInputField(serializers.DecimalField):
    """Decimals in requests: strings or numbers; NaN and infinities are refused by DRF."""
