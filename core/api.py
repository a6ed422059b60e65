"""API plumbing shared by every app: authentication, errors, pagination, throttling, auth views.

Error format (every non-2xx answer of the API)::

    {"detail": "human readable summary", "code": "machine_code", "errors": {"field": ["message"]}}

``errors`` maps input field names (dotted for nested input, ``non_field_errors`` for the
request as a whole) to messages; it is empty for errors that are not about a field.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

import django_filters
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from django_filters.fields import IsoDateTimeField
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


# --- Requests -------------------------------------------------------------------------------
def authenticated_user(request: Request) -> User:
    """The caller, in views that IsAuthenticated already guards (typed for the services)."""
    user = request.user
    if not isinstance(user, User):
        raise exceptions.NotAuthenticated()
    return user


# --- Errors ---------------------------------------------------------------------------------
def query_data(request: Request) -> dict[str, str]:
    """The query string as a serializer should check it: a plain dict, so ``?end=`` is a bad
    value (400), not an omitted one, as DRF reads an empty field of a QueryDict (a form)."""
    return request.query_params.dict()


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Temporarily unavailable; try again later."
    default_code = "service_unavailable"


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
    errors = serializers.DictField(  # type: ignore[assignment]  # a field, as DRF allows
        child=serializers.ListField(child=serializers.CharField())
    )


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI entries for the error statuses a view can answer."""
    descriptions = {
        400: "Invalid input; `errors` holds the field errors.",
        401: "Missing or invalid token.",
        403: "Not allowed on this object.",
        404: "Not found, or not yours.",
        409: "Conflicts with the current state.",
        429: "Too many requests.",
        503: "Temporarily unavailable (the server could not do its part); retry later.",
    }
    return {c: OpenApiResponse(ErrorSerializer, description=descriptions[c]) for c in codes}


# --- Serializers ----------------------------------------------------------------------------
# JSON types each kind of field takes; DRF would also coerce e.g. 1 to "1", "5" to 5, 0 to False.
_JSON_TYPES: list[tuple[type, type | tuple[type, ...], str]] = [
    (serializers.BooleanField, bool, "Must be true or false."),
    (serializers.IntegerField, int, "A valid integer is required."),
    (serializers.CharField, str, "Not a valid string."),
    (serializers.ChoiceField, str, "Not a valid string."),
]


def _json_type_error(field: serializers.Field, value: Any) -> str | None:
    if value is None:
        return None  # the field's allow_null decides
    for kind, expected, message in _JSON_TYPES:
        if isinstance(field, kind):
            wrong_bool = isinstance(value, bool) and expected is not bool
            return message if wrong_bool or not isinstance(value, expected) else None
    return None


class StrictFieldsMixin:
    """Request bodies as the schema says: no unknown keys, and each value of its JSON type.

    Unknown keys are refused instead of silently dropped, and values are not coerced across
    JSON types (``"5"`` is not an integer, ``0`` is not a boolean, ``12`` is not a string).
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            fields = {n: f for n, f in self.fields.items() if not f.read_only}  # type: ignore[attr-defined]
            errors = {str(key): ["Unknown field."] for key in data if key not in fields}
            for name, field in fields.items():
                message = _json_type_error(field, data.get(name)) if name in data else None
                if message:
                    errors[name] = [message]
            if errors:
                raise exceptions.ValidationError(dict(sorted(errors.items())))
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictFieldsSchema(OpenApiSerializerExtension):
    """Document the strictness: request bodies allow no properties beyond the listed ones."""

    target_class = StrictFieldsMixin
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


# --- Pagination -----------------------------------------------------------------------------
class Pagination(PageNumberPagination):
    """Page numbers from 1. Malformed ``page``/``page_size`` are a 400, a page past the end 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    # Longer numbers are out of range whatever the data (and int() of huge strings is slow).
    _max_digits = 9

    def _positive_int(self, request: Request, name: str, maximum: int | None) -> int | None:
        """The parameter's value; None when absent or (with no maximum) beyond any range."""
        raw = request.query_params.get(name)
        if raw is None:
            return None
        digits = raw.lstrip("0")
        if not re.fullmatch(r"[0-9]+", raw) or not digits:
            raise exceptions.ValidationError({name: ["A positive integer is required."]})
        value = int(digits) if len(digits) <= self._max_digits else None
        if maximum is not None and (value is None or value > maximum):
            raise exceptions.ValidationError({name: [f"Ensure this value is at most {maximum}."]})
        return value

    def get_page_size(self, request: Request) -> int:
        size = self._positive_int(request, self.page_size_query_param, self.max_page_size)
        return size or self.page_size

    def get_page_number(self, request: Request, paginator: Any) -> int:
        page = self._positive_int(request, self.page_query_param, None)
        if page is None and self.page_query_param in request.query_params:
            raise exceptions.NotFound("Invalid page.")  # more digits than any real page count
        return page or 1

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        page, size = super().get_schema_operation_parameters(view)
        page["schema"] = {"type": "integer", "minimum": 1}
        page["description"] = "A page number from 1; a page past the last one is a 404."
        size["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        size["description"] = f"Results per page, {self.page_size} by default."
        return [page, size]


# --- Filters --------------------------------------------------------------------------------
class StrictFilterSet(django_filters.FilterSet):
    """Filters whose bad values are a 400, like any other input.

    django-filter skips a blank value, reads anything it does not recognise as a boolean as
    "unset" and drops empty items of an ordering; here all are field errors, so a typo never
    silently widens or reorders a listing.
    """

    BOOLEANS = {"true": True, "false": False, "1": True, "0": False}

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name, flt in self.filters.items():
            raw = self.data.get(name)
            if raw is None or name in self.form.errors:
                continue
            error = self._strict_error(flt, name, raw)
            if error:
                self.form.add_error(name, error)
        return valid and not self.form.errors

    def _strict_error(self, flt: django_filters.Filter, name: str, raw: str) -> str | None:
        if raw == "":
            return "This value may not be blank."
        if isinstance(flt, django_filters.BooleanFilter) and raw.lower() not in self.BOOLEANS:
            return "Must be true or false."
        if isinstance(flt, django_filters.OrderingFilter):
            allowed = {value for value, _ in self.form.fields[name].choices if value}
            if any(item not in allowed for item in raw.split(",")):
                return f"Order by a comma-separated list of: {', '.join(sorted(allowed))}."
        return None


class UTCDateTimeField(IsoDateTimeField):
    """ISO 8601 with any offset Python accepts, turned into UTC (the database takes only
    real-world offsets); a value that leaves the calendar once in UTC is a field error."""

    def to_python(self, value: Any) -> Any:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise DjangoValidationError("Out of range.", code="invalid") from exc


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


# --- Throttling -----------------------------------------------------------------------------
@functools.cache
def _throttle_cache() -> Any:
    # In Redis, so the limit holds across every web process, not per process.
    from django.core.cache.backends.redis import RedisCache

    return RedisCache(settings.REDIS_APP_URL, {"KEY_PREFIX": "throttle"})


class AuthRateThrottle(SimpleRateThrottle):
    """Per client IP on the unauthenticated endpoints (guessing passwords, mass sign-ups)."""

    scope = "auth"

    @property
    def cache(self) -> Any:  # type: ignore[override]
        return _throttle_cache()

    def get_rate(self) -> str:
        # Read at request time, so a deployment (or a test) can change it in settings.
        return settings.API_AUTH_THROTTLE_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# --- Fields ---------------------------------------------------------------------------------
MAX_JSON_DEPTH = 32


def _check_depth(value: Any, depth: int = 0) -> None:
    """Refuse nesting deeper than any settings need (strings no database can store never get
    this far: config.parsers refuses them for every JSON body)."""
    if depth > MAX_JSON_DEPTH:
        raise serializers.ValidationError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    for item in items:
        _check_depth(item, depth + 1)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON object (not a list or a scalar), bounded in depth and size."""

    default_error_messages = {
        "not_an_object": "Expected a JSON object.",
        "too_large": "At most {max_bytes} bytes once serialised.",
    }

    def __init__(self, *, max_bytes: int = 65_536, **kwargs: Any) -> None:
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        _check_depth(value)
        if len(json.dumps(value)) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        return value


DECIMAL_STRING = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class DecimalInputField(serializers.DecimalField):
    """Decimals in requests: a JSON string (exact, plain notation) or a number.

    ``greater_than`` is an exclusive lower bound (``min_value`` is inclusive); NaN and the
    infinities are refused by DRF.
    """

    default_error_messages = {
        "not_plain": 'Write the number in plain notation, e.g. "1000" or "0.01".',
        "min_exclusive": "Ensure this value is greater than {limit}.",
    }

    def __init__(self, *, greater_than: Decimal | None = None, **kwargs: Any) -> None:
        self.greater_than = greater_than
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, str) and not DECIMAL_STRING.fullmatch(data):
            self.fail("not_plain")
        value = super().to_internal_value(data)
        if self.greater_than is not None and value <= self.greater_than:
            self.fail("min_exclusive", limit=self.greater_than)
        return value


class DecimalInputSchema(OpenApiSerializerFieldExtension):
    """Both accepted forms with their bounds, so clients and fuzzers know the valid range."""

    target_class = DecimalInputField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        field: DecimalInputField = self.target
        assert field.max_digits is not None and field.decimal_places is not None
        whole = field.max_digits - field.decimal_places
        if field.max_value is not None:
            whole = min(whole, len(str(int(field.max_value))))
        number: dict[str, Any] = {"type": "number"}
        if field.greater_than is not None:
            number.update(minimum=float(field.greater_than), exclusiveMinimum=True)
        if field.min_value is not None:
            number["minimum"] = float(field.min_value)
        number["maximum"] = float(field.max_value) if field.max_value is not None else 10**whole - 1
        string = {
            "type": "string",
            "format": "decimal",
            "pattern": rf"^-?\d{{1,{whole}}}(\.\d{{1,{field.decimal_places}}})?$",
        }
        return {"oneOf": [string, number], "description": field.help_text or ""}


class FilesAsTheyAre(BaseContentNegotiation):
    """A file goes out as it is whatever ``Accept`` says, an error as JSON (never a 406)."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)
