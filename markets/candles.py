"""The candle store: idempotent imports of ccxt OHLCV rows and reads of closed candles."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, FloatField
from django.db.models.functions import Cast, Extract

from core.clock import market_now
from core.time_utils import (
    datetime_to_ms,
    ms_to_datetime,
    normalize_resolution,
    resolution_to_timedelta,
    round_to_interval_boundary,
)
from markets.exchange_data import PAPER_EXCHANGE, closed_rows, exchange_public_client
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
    return _ohlcv(reversed(rows))


def candles_between(
    *, exchange: str, symbol: str, resolution: str, start: datetime, end: datetime, limit: int
) -> list[list[float]]:
    """Candles that opened at or after ``start`` and closed by ``end``, oldest first, at most
    ``limit`` (a caller asks for one more than it accepts to tell a period that is too long)."""
    last_open = end - resolution_to_timedelta(resolution)
    rows = Candle.objects.filter(
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        open_time__gte=start,
        open_time__lte=last_open,
    ).order_by("open_time")
    if connection.vendor == "postgresql":
        return _pg_ohlcv(rows.values_list(*_PG_OHLCV)[:limit])
    return _ohlcv(rows.values_list("open_time", "open", "high", "low", "close", "volume")[:limit])


def _pg_ohlcv(rows: Any) -> list[list[float]]:
    """A long period's rows as floats straight from PostgreSQL, fetched at once: half the
    time of parsing each timestamp and Decimal and of Django's row iteration. The same
    floats: numeric -> float8 rounds the exact decimal to the nearest double, as
    float(Decimal) does; candles open on whole milliseconds."""
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [list(row) for row in cursor.fetchall()]


_PG_OHLCV = (
    Cast(Extract("open_time", "epoch") * 1000, BigIntegerField()),
    *(Cast(name, FloatField()) for name in ("open", "high", "low", "close", "volume")),
)


def _ohlcv(
    rows: Iterable[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]],
) -> list[list[float]]:
    """Stored candles as strategies see them: ccxt rows of floats."""
    return [
        [int(t.timestamp() * 1000), float(o), float(h), float(lo), float(c), float(v)]
        for t, o, h, lo, c, v in rows
    ]


def candles_span(
    *, exchange: str, symbol: str, resolution: str
) -> tuple[datetime, datetime] | None:
    """The open time of the first stored candle and the close time of the last, if any."""
    stored = Candle.objects.filter(exchange=exchange, symbol=symbol, resolution=resolution)
    first = stored.order_by("open_time").values_list("open_time", flat=True).first()
    last = stored.order_by("-open_time").values_list("open_time", flat=True).first()
    if first is None or last is None:
        return None
    return first, last + resolution_to_timedelta(resolution)


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
    client = exchange_public_client(exchange)
    rows = client.fetch_ohlcv(symbol, resolution, since=datetime_to_ms(open_time), limit=1)
    wanted = datetime_to_ms(open_time)
    return candles_import(
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        rows=[r for r in closed_rows(rows, resolution=resolution) if int(r[0]) == wanted],
    )


def candles_fetchable(*, exchange: str) -> bool:
    """Whether missing candles of ``exchange`` are fetched over REST (never for paper markets,
    whose candles are only what was imported; in tests only from simulated exchanges)."""
    return exchange != PAPER_EXCHANGE and (
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
        if received is not None or not candles_fetchable(exchange=exchange):
            return received
        try:
            candle_fetch_closed(**market, open_time=interval_start)
        except Exception as exc:  # the exchange may be slow or down: retry until the deadline
            logger.warning("fetching %s %s %s failed: %s", exchange, symbol, resolution, exc)
        received = _received_at(**market, open_time=interval_start)
        if received is not None or time.monotonic() >= deadline:
            return received
        time.sleep(settings.CANDLE_SETTLE_POLL_S)


# --- history downloads over ccxt -----------------------------------------------------------

FETCH_PAGE_MAX = 1000  # Binance's spot klines limit, the largest page most exchanges serve


class CandleFetchError(Exception):
    """The exchange could not be read (network, refusal, a malformed answer)."""


@dataclass(frozen=True)
class CandleGap:
    """``missing`` candles absent from the store, the first of them opening at ``first``."""

    first: datetime
    missing: int

    def line(self) -> str:
        return f"gap: {self.missing} candles missing from {_iso(self.first)}"


@dataclass(frozen=True)
class FetchPage:
    number: int
    fetched: int
    new: int
    first: datetime
    last: datetime

    def line(self) -> str:
        return (
            f"page {self.number}: {self.fetched} candles, {self.new} new, "
            f"from {_iso(self.first)} to {_iso(self.last)}"
        )


@dataclass
class FetchSummary:
    resumed_from: datetime  # the open time the download started at
    pages: int = 0
    fetched: int = 0
    new: int = 0
    first: datetime | None = None
    last: datetime | None = None
    gaps: list[CandleGap] = field(default_factory=list)

    def line(self) -> str:
        if self.first is None or self.last is None:
            span = f"nothing to fetch from {_iso(self.resumed_from)}"
        else:
            span = f"from {_iso(self.first)} to {_iso(self.last)}"
        return f"fetched {self.fetched} candles, {self.new} new, {span}; {len(self.gaps)} gaps"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(moment: datetime, *, name: str) -> datetime:
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise CandleDataError(f"{name} must carry a timezone (UTC), e.g. 2024-01-01T00:00:00Z")
    return moment.astimezone(UTC)


def _fetch_client(*, exchange: str, symbol: str, resolution: str) -> Any:
    """A public ccxt client for the market, after checking that the exchange has it."""
    import ccxt

    if exchange not in ccxt.exchanges:
        raise CandleDataError(f"unknown exchange {exchange!r}: not a ccxt exchange id")
    client = exchange_public_client(exchange)
    # A history download sends many requests in a row: ccxt's throttle keeps it within the
    # exchange's published rate limit (a ban would stop it half way).
    client.enableRateLimit = True
    timeframes = getattr(client, "timeframes", None) or {}
    if timeframes and resolution not in timeframes:
        raise CandleDataError(f"{exchange} has no {resolution} candles")
    try:
        client.load_markets()
    except ccxt.BaseError as exc:
        raise CandleFetchError(f"cannot load {exchange}'s markets: {exc}") from exc
    if symbol not in client.markets:
        raise CandleDataError(f"unknown symbol {symbol!r} on {exchange}")
    return client


def _resume_from(
    *, market: dict[str, str], start: datetime, end: datetime, step: timedelta
) -> datetime:
    """After the newest stored candle of the range: a re-run continues where one stopped."""
    newest = (
        Candle.objects.filter(**market, open_time__gte=start, open_time__lte=end - step)
        .order_by("-open_time")
        .values_list("open_time", flat=True)
        .first()
    )
    return start if newest is None else newest + step


def _store_page(*, market: dict[str, str], rows: list[list]) -> int:
    """Store one page; rows already stored stay as they are. Returns rows new to the store."""
    candles = [_candle_from_row(r, **market) for r in rows]
    span = {"open_time__gte": candles[0].open_time, "open_time__lte": candles[-1].open_time}
    # Counted over the page's own span, not the market: cheap on a long history.
    before = Candle.objects.filter(**market, **span).count()
    Candle.objects.bulk_create(candles, ignore_conflicts=True)
    return Candle.objects.filter(**market, **span).count() - before


def candles_gaps(
    *, exchange: str, symbol: str, resolution: str, start: datetime, end: datetime
) -> list[CandleGap]:
    """Runs of candles missing from the store between its first and its last candle opening
    at or after ``start`` and closed by ``end`` (before the first, the market may not have
    been listed yet)."""
    step = resolution_to_timedelta(resolution)
    opens = (
        Candle.objects.filter(
            exchange=exchange,
            symbol=symbol,
            resolution=resolution,
            open_time__gte=start,
            open_time__lte=end - step,
        )
        .order_by("open_time")
        .values_list("open_time", flat=True)
    )
    gaps: list[CandleGap] = []
    previous: datetime | None = None
    for open_time in opens.iterator():
        if previous is not None and open_time - previous > step:
            gaps.append(CandleGap(previous + step, (open_time - previous) // step - 1))
        previous = open_time
    return gaps


def candles_fetch_history(
    *,
    exchange: str,
    symbol: str,
    resolution: str,
    since: datetime,
    until: datetime | None = None,
    page_size: int = FETCH_PAGE_MAX,
    on_page: Callable[[FetchPage], None] | None = None,
) -> FetchSummary:
    """Download the closed candles opening at or after ``since`` and closed by ``until`` (by
    default: now) into the store, a page of ``page_size`` at a time.

    Resumable and idempotent: it starts after the newest candle already stored in the range,
    and the store's unique constraint keeps any candle from being stored twice. The candle
    still open is never stored. Raises CandleDataError for bad input, CandleFetchError when
    the exchange cannot be read (the pages stored until then stay: a re-run resumes).
    """
    import ccxt

    resolution = normalize_resolution(resolution)
    since = _utc(since, name="since")
    now = market_now()
    end = now if until is None else min(_utc(until, name="until"), now)
    if until is not None and since >= until:
        raise CandleDataError(f"since ({_iso(since)}) must be before until ({_iso(until)})")
    if not 1 <= page_size <= FETCH_PAGE_MAX:
        raise CandleDataError(f"page size must be in 1..{FETCH_PAGE_MAX}, got {page_size}")
    client = _fetch_client(exchange=exchange, symbol=symbol, resolution=resolution)
    market = {"exchange": exchange, "symbol": symbol, "resolution": resolution}
    step = resolution_to_timedelta(resolution)
    start = round_to_interval_boundary(since, resolution)
    start = start if start == since else start + step  # the first candle opening at/after since
    cursor = _resume_from(market=market, start=start, end=end, step=step)
    summary = FetchSummary(resumed_from=cursor)
    while cursor + step <= end:
        try:
            rows = client.fetch_ohlcv(
                symbol, resolution, since=datetime_to_ms(cursor), limit=page_size
            )
        except ccxt.BaseError as exc:
            raise CandleFetchError(
                f"fetching {symbol} {resolution} from {exchange}: {exc}"
            ) from exc
        if not rows:
            break  # the exchange has nothing after the cursor
        try:
            newest = ms_to_datetime(max(int(r[0]) for r in rows))
            wanted = _rows_between(rows, start=cursor, end=end, step=step)
        except (TypeError, ValueError, IndexError) as exc:
            raise CandleFetchError(f"{exchange} sent malformed candles: {exc}") from exc
        if wanted:
            _record_page(summary, market=market, rows=wanted, on_page=on_page)
        if newest < cursor:
            break  # an exchange ignoring ``since``: nothing after the cursor to be had
        cursor = newest + step
    summary.gaps = candles_gaps(**market, start=start, end=end)
    return summary


def _rows_between(rows: list[list], *, start: datetime, end: datetime, step: timedelta) -> list:
    """The rows opening at or after ``start`` and closed by ``end``, oldest first. ``end`` is
    never later than now, so the candle still open is always left out."""
    first_ms, last_ms = datetime_to_ms(start), datetime_to_ms(end - step)
    return sorted((r for r in rows if first_ms <= int(r[0]) <= last_ms), key=lambda r: int(r[0]))


def _record_page(
    summary: FetchSummary,
    *,
    market: dict[str, str],
    rows: list[list],
    on_page: Callable[[FetchPage], None] | None,
) -> None:
    new = _store_page(market=market, rows=rows)
    summary.pages += 1
    page = FetchPage(
        number=summary.pages,
        fetched=len(rows),
        new=new,
        first=ms_to_datetime(int(rows[0][0])),
        last=ms_to_datetime(int(rows[-1][0])),
    )
    summary.fetched += page.fetched
    summary.new += new
    summary.first = summary.first or page.first
    summary.last = page.last
    if on_page is not None:
        on_page(page)
