"""Liveness/readiness for the compose health check and load balancers."""

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, JsonResponse

from core.redis_client import get_redis


def health(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check(_database), "redis": _check(_redis)}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503
    )


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    get_redis().ping()


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except Exception as exc:  # a health check reports, it does not raise
        return f"error: {type(exc).__name__}"
    return "ok"
