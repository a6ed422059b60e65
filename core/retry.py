"""The retry policy: which failures are infrastructure hiccups worth retrying, and how."""

from __future__ import annotations

from typing import Any

import redis
from django.db import InterfaceError, OperationalError

# A lost database or Redis connection heals by itself; everything else is recorded by the
# services themselves and retrying would only repeat it.
TRANSIENT: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
)

# Celery task options for every task of the platform (tasks are idempotent).
RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}
