"""The simulator's WebSocket kline stream (Binance spot style) and its replay clock.

The unmodified ccxt.pro Binance client connects to ``ws://HOST:PORT/stream/ws`` (ccxt treats a
connection as spot only when its URL contains ``/stream``), subscribes with
``{"method": "SUBSCRIBE", "params": ["ethbtc@kline_5m"], "id": N}`` and receives kline events:
partial updates of the open candle (``x`` false) and, once the clock passes its close, the final
candle (``x`` true) followed by the new candle's first update.

The replay clock (``--speed X --start T``) runs the candle store's history X times faster than
real time from T, so tests and the demo see real candle closes within seconds. REST klines,
prices and fills follow the same clock (the feed's ``clock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import WSMsgType, web

from core.clock import ReplayClock
from tooling.simulator.server import Extension, Simulator

logger = logging.getLogger(__name__)

TICK_S = 0.02  # how often the clock is checked for a boundary
PARTIAL_EVERY_S = 0.5  # real seconds between updates of the open candle


@dataclass
class Subscription:
    symbol_id: str  # e.g. ETHBTC
    interval: str  # e.g. 5m
    open_ms: int | None = None  # the candle currently streaming
    partial_at: float = 0.0


@dataclass(eq=False)  # compared (and hashed) by identity: kept in a set
class Connection:
    ws: web.WebSocketResponse
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


class KlineStream:
    def __init__(self, simulator: Simulator, clock: ReplayClock | None) -> None:
        self.simulator, self.clock = simulator, clock
        self.connections: set[Connection] = set()
        self.refuse_until = 0.0  # real time before which new connections are refused
        self.sent = 0

    def now_ms(self) -> int:
        if self.clock is None:
            return int(time.time() * 1000)
        return int(self.clock.now().timestamp() * 1000)

    # --- connections ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        if time.time() < self.refuse_until:
            raise web.HTTPServiceUnavailable(text="stream paused")
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        conn = Connection(ws)
        self.connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.command(conn, msg.data)
        finally:
            self.connections.discard(conn)
        return ws

    async def command(self, conn: Connection, text: str) -> None:
        try:
            body = json.loads(text)
            method, params, ident = body["method"], body.get("params", []), body.get("id")
        except (ValueError, KeyError, TypeError):
            await conn.ws.send_json({"error": {"code": 2, "msg": "Invalid request"}})
            return
        if method == "SUBSCRIBE":
            for name in params:
                symbol_id, _, interval = str(name).partition("@kline_")
                conn.subscriptions[name] = Subscription(symbol_id.upper(), interval)
        elif method == "UNSUBSCRIBE":
            for name in params:
                conn.subscriptions.pop(name, None)
        await conn.ws.send_json({"result": None, "id": ident})
        await self.push_all(conn, time.time(), initial=True)

    # --- the clock -----------------------------------------------------------------------
    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time()
            for conn in list(self.connections):
                try:
                    await self.push_all(conn, now)
                except Exception:  # one broken client must not stop the stream
                    logger.exception("kline push failed")

    async def push_all(self, conn: Connection, now: float, *, initial: bool = False) -> None:
        now_ms = self.now_ms()
        # Sent in order, one at a time: the final candle must arrive before the next one opens.
        for sub in list(conn.subscriptions.values()):
            for event in self.events(sub, now_ms, now, initial=initial):
                await conn.ws.send_str(json.dumps(event))
                self.sent += 1

    def events(self, sub: Subscription, now_ms: int, now: float, *, initial: bool) -> list[dict]:
        series = self.series(sub)
        if series is None:
            return []
        step = series.step_ms
        current_open = now_ms - now_ms % step
        events: list[dict] = []
        if sub.open_ms is not None and current_open > sub.open_ms:
            for open_ms in range(sub.open_ms, current_open, step):
                row = self.row(series, open_ms)
                if row is not None:
                    events.append(self.kline(sub, step, row, final=True, now_ms=now_ms))
        if sub.open_ms != current_open or initial or now - sub.partial_at >= PARTIAL_EVERY_S:
            row = self.row(series, current_open)
            if row is not None:
                progress = (now_ms - current_open) / step
                events.append(
                    self.kline(sub, step, _partial(row, progress), final=False, now_ms=now_ms)
                )
            sub.partial_at = now
        sub.open_ms = current_open
        return events

    def series(self, sub: Subscription):  # type: ignore[no-untyped-def]
        market = self.simulator.exchange.markets.get(sub.symbol_id)
        series = self.simulator.feed.series.get(market.symbol) if market else None
        if series is None or series.resolution != sub.interval:
            return None
        return series

    @staticmethod
    def row(series, open_ms: int):  # type: ignore[no-untyped-def]
        import bisect

        index = bisect.bisect_left(series.opens, open_ms)
        if index < len(series.opens) and series.opens[index] == open_ms:
            return series.rows[index]
        return None

    @staticmethod
    def kline(sub: Subscription, step: int, row: tuple, *, final: bool, now_ms: int) -> dict:
        open_ms, o, h, low, c, v = row
        return {
            "e": "kline",
            "E": now_ms,
            "s": sub.symbol_id,
            "k": {
                "t": open_ms,
                "T": open_ms + step - 1,
                "s": sub.symbol_id,
                "i": sub.interval,
                "f": 0,
                "L": 0,
                "o": _s(o),
                "c": _s(c),
                "h": _s(h),
                "l": _s(low),
                "v": _s(v),
                "n": 0,
                "x": final,
                "q": "0",
                "V": "0",
                "Q": "0",
                "B": "0",
            },
        }

    # --- admin: faults of the stream ------------------------------------------------------
    async def admin_drop(self, request: web.Request) -> web.Response:
        """Close every stream connection; refuse new ones for ``refuse_s`` real seconds."""
        body = await request.json() if request.can_read_body else {}
        self.refuse_until = time.time() + float(body.get("refuse_s", 0))
        dropped = len(self.connections)
        for conn in list(self.connections):
            await conn.ws.close()
        return web.json_response({"dropped": dropped, "refuse_until": self.refuse_until})

    async def admin_status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "now_ms": self.now_ms(),
                "clock": self.clock.spec() if self.clock else None,
                "connections": len(self.connections),
                "klines_sent": self.sent,
            }
        )


def _partial(row: tuple, progress: float) -> tuple:
    """The open candle as it looked ``progress`` (0..1) into its interval."""
    open_ms, o, _, _, c, v = row
    p = Decimal(str(min(max(progress, 0.0), 1.0)))
    close = o + (c - o) * p
    return (open_ms, o, max(o, close), min(o, close), close, v * p)


def _s(value: Decimal) -> str:
    # The same digits the REST klines carry: an exchange's stream and REST agree on a candle.
    return str(value)


def kline_stream(clock: ReplayClock | None) -> Extension:
    def install(simulator: Simulator, app: web.Application) -> None:
        stream = KlineStream(simulator, clock)
        app["kline_stream"] = stream
        if clock is not None:
            simulator.feed.clock = stream.now_ms
        for path in ("/stream/ws", "/stream/ws/{n}", "/ws", "/ws/{n}", "/stream"):
            app.router.add_get(path, stream.handle)
        app.router.add_post("/sim/stream/drop", stream.admin_drop)
        app.router.add_get("/sim/stream", stream.admin_status)

        async def start(app: web.Application) -> None:
            app["kline_ticker"] = asyncio.create_task(stream.tick_forever())

        async def stop(app: web.Application) -> None:
            app["kline_ticker"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app["kline_ticker"]
            for conn in list(stream.connections):
                await conn.ws.close()

        app.on_startup.append(start)
        app.on_shutdown.append(stop)

    return install
