"""Which strategies run on which candle: Redis sets keyed by market, rebuilt from the database.

``candle:{exchange}:{symbol}:{resolution}`` holds the ids of the strategies that have at least
one active subscriber on that market; ``candle:markets`` indexes those keys so a candle close
finds its strategies without scanning.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.redis_client import get_redis

INDEX_KEY = "candle:markets"

# Set membership and the index change together, so a concurrent register on the same market
# can never be lost by an unregister that emptied the set a moment before.
_REGISTER = """
redis.call('sadd', KEYS[1], ARGV[1])
redis.call('sadd', KEYS[2], KEYS[1])
return 1
"""
_UNREGISTER = """
redis.call('srem', KEYS[1], ARGV[1])
if redis.call('scard', KEYS[1]) == 0 then redis.call('srem', KEYS[2], KEYS[1]) end
return 1
"""


def market_key(*, exchange: str, symbol: str, resolution: str) -> str:
    return f"candle:{exchange}:{symbol}:{resolution}"


def resolution_of(key: str) -> str:
    return key.rsplit(":", 1)[1]


def registry_register(*, strategy_id: int, key: str) -> None:
    get_redis().eval(_REGISTER, 2, key, INDEX_KEY, str(strategy_id))


def registry_unregister(*, strategy_id: int, key: str) -> None:
    get_redis().eval(_UNREGISTER, 2, key, INDEX_KEY, str(strategy_id))


def registry_strategy_ids(*, key: str) -> set[int]:
    return {int(member) for member in get_redis().smembers(key)}


def registry_market_keys() -> set[str]:
    return {str(key) for key in get_redis().smembers(INDEX_KEY)}


def registry_active_resolutions() -> set[str]:
    return {resolution_of(key) for key in registry_market_keys()}


def registry_strategy_ids_by_market(*, resolution: str) -> dict[str, list[int]]:
    """The strategy ids of every market of ``resolution``, per market key (one round trip)."""
    keys = sorted(k for k in registry_market_keys() if resolution_of(k) == resolution)
    pipe = get_redis().pipeline(transaction=False)
    for key in keys:
        pipe.smembers(key)
    members = pipe.execute() if keys else []
    return {key: sorted(int(m) for m in ids) for key, ids in zip(keys, members, strict=True) if ids}


def registry_replace(*, entries: Iterable[tuple[int, str]]) -> None:
    """Replace the whole registry with ``(strategy_id, market_key)`` entries in one step."""
    client = get_redis()
    old_keys = client.smembers(INDEX_KEY)
    pipe = client.pipeline(transaction=True)
    for key in old_keys:
        pipe.delete(key)
    pipe.delete(INDEX_KEY)
    for strategy_id, key in entries:
        pipe.sadd(key, str(strategy_id))
        pipe.sadd(INDEX_KEY, key)
    pipe.execute()
