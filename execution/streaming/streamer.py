"""The candle streamer: one long-running process per deployment (a second copy is harmless).

It watches every market in the strategy registry over the exchange's WebSocket (ccxt.pro
``watch_ohlcv``), follows registry changes live, and for each closed candle stores it and
dispatches the executions of that market's strategies at once. After a disconnect it
reconnects with backoff and backfills missed closes over REST, oldest first. Exchanges without
WebSocket OHLCV are polled just after each boundary. Exactly-once does not depend on this
process: the execution table's unique (strategy, interval) constraint is the fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from core.clock import market_now
from core.metrics import STREAM_BACKFILLS, STREAM_MARKETS, STREAM_RECONNECTS
from core.time_utils import (
    compute_next_candle_close,
    datetime_to_ms,
    resolution_to_timedelta,
)
from execution.streaming import services
from execution.streaming.closer import CandleCloser, ClosedCandle, Row
from markets.exchange_data import closed_rows, exchange_public_client, exchange_stream_client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Market:
    exchange: str
    symbol: str
    resolution: str

    @property
    def labels(self) -> dict[str, str]:
        """Its metrics' labels: symbols would multiply the series."""
        return {"exchange": self.exchange, "resolution": self.resolution}

    @property
    def step_ms(self) -> int:
        return int(resolution_to_timedelta(self.resolution).total_seconds() * 1000)


@dataclass
class Watch:
    market: Market
    closer: CandleCloser
    task: asyncio.Task | None = None


@dataclass
class Streamer:
    poll_s: float = field(default_factory=lambda: settings.STREAM_REGISTRY_POLL_S)
    streamer_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    watches: dict[Market, Watch] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)
    finals: dict[tuple[str, str, str], set[int]] = field(default_factory=dict)
    # The ORM is synchronous: one thread keeps one database connection for the whole process.
    db: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "stream-db"))

    async def call(self, fn: Any, /, **kwargs: Any) -> Any:
        def run() -> Any:
            close_old_connections()
            return fn(**kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.db, run)

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        logger.info("candle streamer %s started", self.streamer_id)
        try:
            while not stop.is_set():
                await self.call(services.stream_heartbeat, streamer_id=self.streamer_id)
                await self.follow_registry()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
        finally:
            await self.shutdown()

    async def follow_registry(self) -> None:
        wanted = {Market(*m) for m in await self.call(services.stream_markets)}
        for market in wanted - self.watches.keys():
            await self.watch_start(market)
        for market in self.watches.keys() - wanted:
            self.watch_stop(market)

    async def watch_start(self, market: Market) -> None:
        last = await self.call(
            services.stream_last_stored_ms,
            exchange=market.exchange,
            symbol=market.symbol,
            resolution=market.resolution,
        )
        watch = Watch(market, CandleCloser(market.step_ms, last_closed_ms=last))
        self.watches[market] = watch
        watch.task = asyncio.create_task(self.watch_loop(watch), name=f"watch {market}")
        STREAM_MARKETS.labels(exchange=market.exchange).inc()
        logger.info("watching %s %s %s", market.exchange, market.symbol, market.resolution)

    def watch_stop(self, market: Market) -> None:
        watch = self.watches.pop(market)
        if watch.task is not None:
            watch.task.cancel()
        STREAM_MARKETS.labels(exchange=market.exchange).dec()
        logger.info("stopped watching %s %s %s", market.exchange, market.symbol, market.resolution)

    async def watch_loop(self, watch: Watch) -> None:
        client = self.stream_client(watch.market.exchange)
        # A restart or a gap: closes missed while nobody watched run first, oldest first.
        await self.backfill(watch)
        if client is None:
            await self.poll_loop(watch)
            return
        backoff = 1.0
        while True:
            try:
                rows = await client.watch_ohlcv(watch.market.symbol, watch.market.resolution)
                backoff = 1.0
                key = (
                    watch.market.exchange,
                    client.market(watch.market.symbol)["id"],
                    watch.market.resolution,
                )
                for open_ms in self.finals.pop(key, set()):
                    watch.closer.mark_final(open_ms)
                # ccxt's cache overwrites its rows in place: copy before keeping any.
                copied = [list(r) for r in rows]
                if watch.closer.has_gap(copied):
                    await self.backfill(watch)  # closes that happened while reconnecting
                await self.closes(watch, watch.closer.feed(copied))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "stream %s failed (%s: %s); reconnecting in %.0f s",
                    watch.market,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                watch.closer.disconnected()
                STREAM_RECONNECTS.labels(**watch.market.labels).inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.STREAM_RECONNECT_MAX_S)
                await self.backfill(watch)

    async def poll_loop(self, watch: Watch) -> None:
        """For exchanges without WebSocket OHLCV: fetch just after each boundary."""
        while True:
            now = market_now()
            boundary = compute_next_candle_close(now, watch.market.resolution)
            await asyncio.sleep(_real_seconds(boundary - now) + settings.STREAM_POLL_DELAY_S)
            # The exchange may publish the candle a moment late: retry for the settle time.
            expected = datetime_to_ms(boundary) - watch.market.step_ms
            deadline = time.monotonic() + settings.CANDLE_SETTLE_S
            while True:
                await self.backfill(watch, trigger="stream")
                done = (watch.closer.last_closed_ms or expected) >= expected
                if done or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(settings.CANDLE_SETTLE_POLL_S)

    async def backfill(self, watch: Watch, trigger: str = "backfill") -> None:
        closer = watch.closer
        if closer.last_closed_ms is None:
            return  # a market never seen before starts at the next close, not in history
        try:
            rows = await self.call(
                _fetch_closed_since,
                market=watch.market,
                since_ms=closer.last_closed_ms + watch.market.step_ms,
            )
        except Exception as exc:
            logger.warning("backfill of %s failed: %s", watch.market, exc)
            STREAM_BACKFILLS.labels(**watch.market.labels, outcome="failed").inc()
            return
        missed = [ClosedCandle(r, confirmed=True) for r in rows if r[0] > closer.last_closed_ms]
        STREAM_BACKFILLS.labels(
            **watch.market.labels, outcome="filled" if missed else "empty"
        ).inc()
        if missed:
            logger.info("backfilling %d closes of %s", len(missed), watch.market)
            closer.last_closed_ms = missed[-1].row[0]
            closer.suspect_ms = None
            await self.closes(watch, missed, trigger=trigger)

    async def closes(
        self, watch: Watch, closed: list[ClosedCandle], trigger: str = "stream"
    ) -> None:
        for candle in closed:
            row: Row | None = candle.row
            if not candle.confirmed:
                row = await self.confirm(watch.market, candle.row)
            if row is None:
                continue  # the execution's own settle step fetches it, or skips with a reason
            await self.call(
                services.stream_candle_closed,
                exchange=watch.market.exchange,
                symbol=watch.market.symbol,
                resolution=watch.market.resolution,
                row=row,
                trigger=trigger,
            )

    async def confirm(self, market: Market, row: Row) -> Row | None:
        try:
            rows = await self.call(_fetch_closed_since, market=market, since_ms=row[0])
        except Exception as exc:
            logger.warning("could not confirm %s candle %s: %s", market, row[0], exc)
            return None
        return next((r for r in rows if r[0] == row[0]), None)

    def stream_client(self, exchange: str) -> Any | None:
        if exchange not in self.clients:
            polled = exchange in settings.STREAM_POLL_EXCHANGES
            client = None if polled else exchange_stream_client(exchange)
            if client is not None:
                self._read_final_flags(client, exchange)
            self.clients[exchange] = client
        return self.clients[exchange]

    def _read_final_flags(self, client: Any, exchange: str) -> None:
        """Binance marks a kline final with ``x``; ccxt drops it, so read it off the message."""
        original = client.handle_ohlcv

        def handle_ohlcv(ws_client: Any, message: dict) -> Any:
            kline = message.get("k") if isinstance(message, dict) else None
            if isinstance(kline, dict) and kline.get("x") is True:
                key = (exchange, str(kline.get("s")), str(kline.get("i")))
                self.finals.setdefault(key, set()).add(int(kline["t"]))
            return original(ws_client, message)

        client.handle_ohlcv = handle_ohlcv

    async def shutdown(self) -> None:
        for market in list(self.watches):
            self.watch_stop(market)
        for client in self.clients.values():
            if client is not None:
                await client.close()
        await self.call(services.stream_heartbeat_clear, streamer_id=self.streamer_id)
        self.db.shutdown(wait=False)


def _fetch_closed_since(*, market: Market, since_ms: int) -> list[Row]:
    client = exchange_public_client(market.exchange)
    rows = client.fetch_ohlcv(market.symbol, market.resolution, since=since_ms, limit=500)
    return sorted(closed_rows(rows, resolution=market.resolution), key=lambda r: r[0])


def _real_seconds(market_delta: timedelta) -> float:
    from core.clock import replay_clock

    clock = replay_clock()
    seconds = market_delta.total_seconds()
    return seconds / clock.speed if clock else seconds
