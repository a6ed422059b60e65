"""The candle store: idempotent imports of ccxt OHLCV rows and reads of closed candles."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from core.time_utils import (
    datetime_to_ms,
    ms_to_datetime,
    normalize_resolution,
    resolution_to_timedelta,
    round_to_interval_boundary,
)
from markets.models import Candle

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
OhlcvRow = Sequence[float | int | str]


class CandleDataError(ValueError):
    """Candle input that cannot be stored as it is."""


def _candle_from_row(row: OhlcvRow, *, exchange: str, symbol: str, resolution: str) -> Candle:
    if not isinstance(row, list | tuple) or len(row) < 6:
        raise CandleDataError(
            f"expected [open_time_ms, open, high, low, close, volume], got {row!r}"
        )
    try:
        open_time = ms_to_datetime(int(row[0]))
        values = [Decimal(str(v)) for v in row[1:6]]
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise CandleDataError(f"bad candle row {row!r}: {exc}") from exc
    if round_to_interval_boundary(open_time, resolution) != open_time:
        raise CandleDataError(
            f"open time {open_time.isoformat()} is not on a {resolution} boundary"
        )
    if any(not v.is_finite() or v < 0 for v in values):
        raise CandleDataError(f"bad candle values {row!r}: prices and volume must be finite, >= 0")
    o, h, low, c, v = values
    return Candle(
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        open_time=open_time,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
    )


def candles_import(*, exchange: str, symbol: str, resolution: str, rows: Iterable[OhlcvRow]) -> int:
    """Store OHLCV rows; rows already stored are left as they are. Returns rows new to the store."""
    resolution = normalize_resolution(resolution)
    candles = [
        _candle_from_row(r, exchange=exchange, symbol=symbol, resolution=resolution) for r in rows
    ]
    existing = Candle.objects.filter(
        exchange=exchange, symbol=symbol, resolution=resolution
    ).count()
    for start in range(0, len(candles), BATCH_SIZE):
        Candle.objects.bulk_create(candles[start : start + BATCH_SIZE], ignore_conflicts=True)
    return (
        Candle.objects.filter(exchange=exchange, symbol=symbol, resolution=resolution).count()
        - existing
    )


def candle_store_new(*, exchange: str, symbol: str, resolution: str, row: OhlcvRow) -> bool:
    """Store one closed candle; True only for the caller that inserted it (the unique
    constraint decides between concurrent writers, e.g. two streamers)."""
    candle = _candle_from_row(row, exchange=exchange, symbol=symbol, resolution=resolution)
    try:
        with transaction.atomic():
            candle.save(force_insert=True)
    except IntegrityError:
        return False
    return True


def candles_import_file(*, path: Path, exchange: str, symbol: str, resolution: str) -> int:
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CandleDataError(f"cannot read {path}: {exc}") from exc
    if not isinstance(rows, list):
        raise CandleDataError(f"{path} must hold a JSON array of OHLCV rows")
    return candles_import(exchange=exchange, symbol=symbol, resolution=resolution, rows=rows)


def candles_closed_window(
    *, exchange: str, symbol: str, resolution: str, close_time: datetime, limit: int
) -> list[list[float]]:
    """The last ``limit`` candles closed at or before ``close_time``, oldest first.

    A candle that opened at ``close_time - resolution`` closes exactly at ``close_time``; any
    later candle had not closed and is never returned (no look-ahead).
    """
    last_open = close_time - resolution_to_timedelta(resolution)
    rows = (
        Candle.objects.filter(
            exchange=exchange, symbol=symbol, resolution=resolution, open_time__lte=last_open
        )
        .order_by("-open_time")
        .values_list("open_time", "open", "high", "low", "close", "volume")[:limit]
    )
    return [
        [int(t.timestamp() * 1000), float(o), float(h), float(lo), float(c), float(v)]
        for t, o, h, lo, c, v in reversed(rows)
    ]


def _received_at(
    *, exchange: str, symbol: str, resolution: str, open_time: datetime
) -> datetime | None:
    return (
        Candle.objects.filter(
            exchange=exchange, symbol=symbol, resolution=resolution, open_time=open_time
        )
        .values_list("received_at", flat=True)
        .first()
    )


def candle_fetch_closed(*, exchange: str, symbol: str, resolution: str, open_time: datetime) -> int:
    """Fetch the candle opening at ``open_time`` over REST and store it once it has closed.

    Only that candle: a newer close belongs to whoever dispatches closes (the streamer stores
    a close and dispatches it in one step). Stored here by an execution that ran late, it would
    look handled to a streamer coming back, which backfills from the newest stored candle, and
    its executions would never run.
    """
    from markets.exchange_data import closed_rows, exchange_public_client

    client = exchange_public_client(exchange)
    rows = client.fetch_ohlcv(symbol, resolution, since=datetime_to_ms(open_time), limit=1)
    wanted = datetime_to_ms(open_time)
    return candles_import(
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        rows=[r for r in closed_rows(rows, resolution=resolution) if int(r[0]) == wanted],
    )


def _may_fetch(exchange: str) -> bool:
    return exchange != "paper" and (
        settings.CANDLE_REST_FETCH or exchange in settings.EXCHANGE_URL_OVERRIDES
    )


def candles_settle(
    *, exchange: str, symbol: str, resolution: str, interval_start: datetime
) -> datetime | None:
    """When the closed candle opening at ``interval_start`` reached the store, or None.

    A missing candle is fetched over REST, retrying for at most ``CANDLE_SETTLE_S``: an exchange
    often publishes the newest candle a moment after the boundary.
    """
    market = {"exchange": exchange, "symbol": symbol, "resolution": resolution}
    deadline = time.monotonic() + settings.CANDLE_SETTLE_S
    while True:
        received = _received_at(**market, open_time=interval_start)
        if received is not None or not _may_fetch(exchange):
            return received
        try:
            candle_fetch_closed(**market, open_time=interval_start)
        except Exception as exc:  # the exchange may be slow or down: retry until the deadline
            logger.warning("fetching %s %s %s failed: %s", exchange, symbol, resolution, exc)
        received = _received_at(**market, open_time=interval_start)
        if received is not None or time.monotonic() >= deadline:
            return received
        time.sleep(settings.CANDLE_SETTLE_POLL_S)
