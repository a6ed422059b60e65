"""A token-bucket rate limiter in Redis, shared by every worker process.

ccxt's own limiter lives in one exchange instance, and every credential has its own instance
in every worker process: only a shared store can hold a credential (or an exchange) to its rate.
One script call takes a token from several buckets at once, or from none of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# KEYS: bucket keys. ARGV: pairs of (rate per second, burst) per key.
# Returns 0 when a token was taken from every bucket, else the milliseconds to wait.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000
  local burst = tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + (now - ts) * rate)
  state[i] = tokens
  if tokens < 1 then
    wait = math.max(wait, math.ceil((1 - tokens) / rate))
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000
  local burst = tonumber(ARGV[2 * i])
  redis.call('HSET', key, 'tokens', state[i] - 1, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst / rate) + 1000)
end
return 0
"""


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: float  # tokens per second
    burst: float


def bucket_for_credential(*, credential_id: int, rate: float) -> Bucket:
    return Bucket(f"ratelimit:credential:{credential_id}", rate, max(1.0, rate))


def bucket_for_exchange(*, exchange_id: str, rate: float) -> Bucket:
    return Bucket(f"ratelimit:exchange:{exchange_id}", rate, max(1.0, rate))


class AsyncRateLimiter:
    """Waits until every bucket grants a token. Built inside the event loop that uses it."""

    def __init__(self, redis_client) -> None:  # type: ignore[no-untyped-def]
        self._script = redis_client.register_script(_TAKE)

    async def acquire(self, *buckets: Bucket, max_wait_s: float = 60.0) -> float:
        """Returns the seconds waited."""
        keys = [b.key for b in buckets]
        args: list[float] = []
        for b in buckets:
            args += [b.rate, b.burst]
        waited = 0.0
        while True:
            wait_ms = int(await self._script(keys=keys, args=args))
            if wait_ms <= 0:
                return waited
            if waited >= max_wait_s:
                raise TimeoutError(f"rate limit not granted after {waited:.1f} s on {keys}")
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000
