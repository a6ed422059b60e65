"""The one Redis client for application data (registry, locks, events)."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    # redis-py's pool notices a fork and reconnects, so one client per process is safe.
    return redis.Redis.from_url(settings.REDIS_APP_URL, decode_responses=True)
