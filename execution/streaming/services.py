"""Writes and reads of the candle streamer (synchronous: called from its database thread)."""

from __future__ import annotations

from django.conf import settings

from core.redis_client import get_redis
from core.time_utils import candle_close_time, datetime_to_ms, ms_to_datetime
from markets.candles import candle_store_new
from markets.exchange_data import PAPER_EXCHANGE
from markets.models import Candle
from markets.registry import INDEX_KEY

ALIVE_KEY = "stream:alive"


def market_parse(key: str) -> tuple[str, str, str]:
    """``candle:{exchange}:{symbol}:{resolution}`` (symbols may hold ':', e.g. XRP/USDT:USDT)."""
    _, rest = key.split(":", 1)
    exchange, rest = rest.split(":", 1)
    symbol, resolution = rest.rsplit(":", 1)
    return exchange, symbol, resolution


def stream_markets() -> list[tuple[str, str, str]]:
    """The registered markets an exchange can stream (paper markets have no exchange)."""
    markets = (market_parse(str(key)) for key in get_redis().smembers(INDEX_KEY))
    return sorted(market for market in markets if market[0] != PAPER_EXCHANGE)


def stream_heartbeat(*, streamer_id: str) -> None:
    ttl = settings.STREAM_HEARTBEAT_TTL_S
    pipe = get_redis().pipeline()
    pipe.set(f"{ALIVE_KEY}:{streamer_id}", 1, ex=ttl)
    pipe.set(ALIVE_KEY, streamer_id, ex=ttl)
    pipe.execute()


def stream_heartbeat_clear(*, streamer_id: str) -> None:
    client = get_redis()
    client.delete(f"{ALIVE_KEY}:{streamer_id}")
    if client.get(ALIVE_KEY) == streamer_id:
        client.delete(ALIVE_KEY)


def streamer_alive() -> bool:
    return bool(get_redis().exists(ALIVE_KEY))


def stream_last_stored_ms(*, exchange: str, symbol: str, resolution: str) -> int | None:
    newest = (
        Candle.objects.filter(exchange=exchange, symbol=symbol, resolution=resolution)
        .order_by("-open_time")
        .values_list("open_time", flat=True)
        .first()
    )
    return None if newest is None else datetime_to_ms(newest)


def stream_candle_closed(
    *, exchange: str, symbol: str, resolution: str, row: list, trigger: str = "stream"
) -> bool:
    """Store a closed candle and start its executions; False if it was in the store already.

    Whoever stores a candle first dispatches its close: of two streamers only one does, and a
    candle an execution fetched itself (beat, after the grace) was dispatched by beat. A crash
    between the two steps leaves the close to beat. (Even a double dispatch would be harmless:
    the execution table's unique constraint is the fence.)
    """
    from execution.services import candle_close_dispatch

    stored = candle_store_new(exchange=exchange, symbol=symbol, resolution=resolution, row=row)
    if not stored:
        return False
    close_time = candle_close_time(ms_to_datetime(int(row[0])), resolution)
    candle_close_dispatch(
        resolution=resolution,
        close_time=close_time,
        trigger=trigger,
        exchange=exchange,
        symbol=symbol,
    )
    return True
