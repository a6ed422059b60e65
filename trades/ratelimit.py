"""A token-bucket rate limiter in Redis, shared by every worker process.

ccxt's own limiter lives in one exchange instance, and every credential has its own instance
in every worker process: only a shared store can hold a credential (or an exchange) to its rate.
One script call takes a token from several buckets at once, or from none of them; another
grants a whole batch of such takes in one round trip (a fan-out's orders), each all or nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from core.metrics import RATELIMIT_TOKENS, RATELIMIT_WAIT

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

# A batch of takes in one call. KEYS: the distinct bucket keys. ARGV: the number of keys, then
# (rate per second, burst) per key, then one entry per take: the 1-based indices of its keys,
# comma-separated. Takes are granted in order while every one of their buckets holds a token.
# Returns one 1 (granted) or 0 (not granted: take it alone, waiting) per take.
_TAKE_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local tokens = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i]) / 1000
  local burst = tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local have = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens[i] = math.min(burst, have + (now - ts) * rate)
end
local granted = {}
for o = 2 * n + 2, #ARGV do
  local idx = {}
  local ok = 1
  for s in string.gmatch(ARGV[o], '%d+') do
    local i = tonumber(s)
    idx[#idx + 1] = i
    if tokens[i] < 1 then ok = 0 end
  end
  if ok == 1 then
    for _, i in ipairs(idx) do tokens[i] = tokens[i] - 1 end
  end
  granted[#granted + 1] = ok
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i]) / 1000
  local burst = tonumber(ARGV[2 * i + 1])
  redis.call('HSET', key, 'tokens', tokens[i], 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst / rate) + 1000)
end
return granted
"""


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: float  # tokens per second
    burst: float
    exchange: str = ""  # an exchange's bucket: the label of its waits


def _exchange_of(buckets: Sequence[Bucket]) -> str:
    return next((b.exchange for b in buckets if b.exchange), "")


def bucket_for_credential(*, credential_id: int, rate: float) -> Bucket:
    return Bucket(f"ratelimit:credential:{credential_id}", rate, max(1.0, rate))


def bucket_for_exchange(*, exchange_id: str, rate: float) -> Bucket:
    return Bucket(f"ratelimit:exchange:{exchange_id}", rate, max(1.0, rate), exchange_id)


class AsyncRateLimiter:
    """Waits until every bucket grants a token. Built inside the event loop that uses it."""

    def __init__(self, redis_client) -> None:  # type: ignore[no-untyped-def]
        self._script = redis_client.register_script(_TAKE)
        self._many = redis_client.register_script(_TAKE_MANY)

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
                RATELIMIT_TOKENS.labels(outcome="granted" if not waited else "waited").inc()
                RATELIMIT_WAIT.labels(exchange=_exchange_of(buckets)).observe(waited)
                return waited
            if waited >= max_wait_s:
                raise TimeoutError(f"rate limit not granted after {waited:.1f} s on {keys}")
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000

    async def take_many(self, takes: Sequence[Sequence[Bucket]]) -> list[bool]:
        """Grant a token from every bucket of each take, in order, in one round trip; no waiting.

        Each take is all or nothing; a take that is not granted (a bucket ran dry, e.g. one
        credential with more orders in the batch than its burst) is left to ``acquire``.
        """
        if not takes:
            return []
        index: dict[str, int] = {}
        args: list[float | str] = [0]
        for take in takes:
            for bucket in take:
                if bucket.key not in index:
                    index[bucket.key] = len(index) + 1
                    args += [bucket.rate, bucket.burst]
        args[0] = len(index)
        # A bucket named twice in one take counts once (the script would take it twice).
        args += [",".join(str(i) for i in dict.fromkeys(index[b.key] for b in t)) for t in takes]
        granted = [bool(int(g)) for g in await self._many(keys=list(index), args=args)]
        RATELIMIT_TOKENS.labels(outcome="granted").inc(granted.count(True))
        RATELIMIT_TOKENS.labels(outcome="denied").inc(granted.count(False))
        return granted
