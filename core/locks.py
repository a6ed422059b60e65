"""A Redis lock owned by a token: only its owner releases it.

The lock only saves work (two workers racing for one candle); the database's unique
constraint on (strategy, interval_start) is what makes an execution happen once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from core.redis_client import get_redis

# Compare-and-delete in one step, so an expired lock taken over by another worker is never
# released by the worker that lost it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def strategy_run_lock_key(*, strategy_id: int, interval_key: str) -> str:
    return f"lock:strategy:{strategy_id}:run:{interval_key}"


def lock_acquire(*, key: str, ttl_s: int) -> str | None:
    """Return the owner token if the lock was taken, else None."""
    token = secrets.token_hex(16)
    taken = get_redis().set(key, token, nx=True, ex=ttl_s)
    return token if taken else None


def lock_release(*, key: str, token: str) -> bool:
    return bool(get_redis().eval(_RELEASE, 1, key, token))


@contextmanager
def redis_lock(*, key: str, ttl_s: int) -> Iterator[str | None]:
    """Yield the token when the lock was taken, None when someone else holds it."""
    token = lock_acquire(key=key, ttl_s=ttl_s)
    try:
        yield token
    finally:
        if token is not None:
            lock_release(key=key, token=token)
