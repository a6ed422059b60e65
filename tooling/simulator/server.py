"""The simulator process: its state, request plumbing, and the aiohttp application.

The HTTP surface is assembled from modules, each adding its routes to one application:
``tooling.simulator.rest`` (a subset of Binance's spot REST API) and ``tooling.simulator.admin``
(the unsigned admin API for tests, benchmarks and the demo). Further modules (e.g. a WebSocket
kline stream) plug in as *extensions*: callables ``(simulator, app) -> None`` passed to
``Simulator.app`` or named on the command line (``exchange_simulator --extension dotted.path``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web

from tooling.simulator.engine import (
    Exchange,
    Market,
    Quote,
    SimError,
    default_market,
    now_ms,
)
from tooling.simulator.feed import CandleFeed

logger = logging.getLogger(__name__)

DEFAULT_SYMBOLS = ("ETH/BTC", "LTC/BTC", "ADA/BTC", "XRP/ETH", "BTC/USDT", "ETH/USDT")

REQUEST_LOG = 500_000

Extension = Callable[["Simulator", web.Application], None]


@dataclass
class Faults:
    """Injected failures. Rates draw per order request; ``pending`` counts are deterministic."""

    fail_rate: float = 0.0  # 5xx before the order is accepted
    timeout_after_accept_rate: float = 0.0  # order accepted, the answer never comes in time
    rate_limit_rate: float = 0.0  # 429 (and every fifth one a 418 ban) before acceptance
    hold_s: float = 30.0  # how long an accepted order's answer is held back
    pending: Counter = field(default_factory=Counter)  # kind -> next N order requests
    keys: set[str] = field(default_factory=set)  # restrict injection to these api keys

    def draw(self, *, api_key: str, rng: random.Random, creating: bool) -> str | None:
        if self.keys and api_key not in self.keys:
            return None
        kinds = ("fail", "rate_limit", "ban", "timeout_after_accept")
        for kind in kinds if creating else kinds[:3]:
            if self.pending[kind] > 0:
                self.pending[kind] -= 1
                return kind
        roll = rng.random()
        rates = [("fail", self.fail_rate), ("rate_limit", self.rate_limit_rate)]
        if creating:
            rates.append(("timeout_after_accept", self.timeout_after_accept_rate))
        for kind, rate in rates:
            if roll < rate:
                return kind
            roll -= rate
        return None


class Simulator:
    def __init__(
        self,
        *,
        exchange_id: str = "binance",
        symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
        faults: Faults | None = None,
        latency_ms: float = 0.0,
        seed: int | None = None,
        refresh_s: float = 1.0,
    ) -> None:
        self.exchange_id = exchange_id
        self.feed = CandleFeed(exchange_id)
        self.symbols = symbols
        self.exchange = self._new_exchange()
        self.faults = faults or Faults()
        self.latency_s = latency_ms / 1000
        self.rng = random.Random(seed)
        self.stats: Counter = Counter()
        self.refresh_s = refresh_s
        self.rate_limit_hits = 0
        # (ms, api key) of every signed request, newest last: how fast clients really asked.
        self.requests: deque[tuple[int, str]] = deque(maxlen=REQUEST_LOG)
        # The client ends (host, port) of every connection the exchange API was asked on: a
        # client that reuses its connections (keep-alive, a warmed pool) adds none.
        self.peers: set[tuple[str, int]] = set()

    def _new_exchange(self) -> Exchange:
        return Exchange(markets=[], price_source=self._price)

    def _price(self, market: Market) -> Quote | None:
        row = self.feed.current(market.symbol)
        return None if row is None else Quote(row[4], row[2], row[3], int(row[0]))

    def markets_sync(self) -> None:
        for symbol in {*self.symbols, *self.feed.series}:
            if "/" in symbol and ":" not in symbol:
                market = default_market(symbol)
                self.exchange.markets.setdefault(market.symbol_id, market)

    async def refresh(self) -> int:
        added = await asyncio.to_thread(self.feed.refresh)
        self.markets_sync()
        self.exchange.limits_match()
        return added

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # a database hiccup must not stop the simulator
                logger.exception("candle refresh failed")

    def reset(self) -> None:
        """Forget accounts, orders, faults, stats and candles (markets stay listed)."""
        markets = self.exchange.markets
        self.exchange = self._new_exchange()
        self.exchange.markets = markets
        self.faults = Faults(hold_s=self.faults.hold_s)
        self.latency_s = 0.0
        self.stats.clear()
        self.rate_limit_hits = 0
        self.requests.clear()
        self.peers.clear()
        self.feed.reset()

    # --- request plumbing ----------------------------------------------------------------
    async def signed_params(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Check the signature as Binance does; returns (api key, parameters)."""
        api_key = request.headers.get("X-MBX-APIKEY", "")
        self.requests.append((now_ms(), api_key))
        account = self.exchange.account(api_key)
        body = (await request.text()) if request.can_read_body else ""
        total = request.query_string + body  # Binance signs query string + body, concatenated
        payload, sep, signature = total.rpartition("&signature=")
        if not sep:
            raise SimError(400, -1102, "Mandatory parameter 'signature' was not sent.")
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            self.stats["bad_signature"] += 1
            raise SimError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        timestamp = int(params.get("timestamp", "0"))
        window = int(params.get("recvWindow", "5000"))
        if abs(now_ms() - timestamp) > window:
            raise SimError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return api_key, params

    async def fault(self, api_key: str, *, creating: bool = False) -> str | None:
        """Draw an injected fault for this request; raises the 5xx / 429 / 418 ones."""
        kind = self.faults.draw(api_key=api_key, rng=self.rng, creating=creating)
        if kind:
            self.stats[f"fault_{kind}"] += 1
        if kind == "fail":
            raise SimError(503, -1001, "Internal error; unable to process your request.")
        if kind == "rate_limit":
            self.rate_limit_hits += 1
            if self.rate_limit_hits % 5 == 0:
                kind = "ban"
                self.stats["fault_ban"] += 1
            else:
                raise SimError(429, -1003, "Too many requests; please use the websocket.")
        if kind == "ban":
            raise SimError(418, -1003, "Way too many requests; IP banned until later.")
        return kind

    def request_rates(self, *, window_ms: int = 1000, since: int = 0) -> dict[str, float]:
        """The most signed requests seen in any ``window_ms``: overall and for the busiest key;
        ``since``: the requests after the first ``since`` ones only (``requests`` counts all)."""
        seen = list(self.requests)[since:]
        times = [t for t, _ in seen]
        by_key: dict[str, list[int]] = {}
        for t, key in seen:
            by_key.setdefault(key, []).append(t)
        per_key = max((_peak(ts, window_ms) for ts in by_key.values()), default=0)
        return {
            "requests": len(self.requests),
            "keys": len(by_key),
            "peak_per_window": _peak(times, window_ms),
            "peak_per_key_per_window": per_key,
            "window_ms": window_ms,
        }

    async def latency(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

    # --- the application -----------------------------------------------------------------
    def app(self, extensions: Iterable[Extension] = ()) -> web.Application:
        from tooling.simulator import admin, rest

        app = web.Application(middlewares=[_errors_middleware, _peers_middleware])
        app["simulator"] = self
        rest.install(self, app)
        admin.install(self, app)
        for extension in extensions:
            extension(self, app)

        async def start_refresh(app: web.Application) -> None:
            await self.refresh()
            app["refresher"] = asyncio.create_task(self.refresh_forever())

        async def stop_refresh(app: web.Application) -> None:
            app["refresher"].cancel()

        app.on_startup.append(start_refresh)
        app.on_cleanup.append(stop_refresh)
        return app


def _peak(times: list[int], window_ms: int) -> int:
    """The most timestamps (sorted) that fall within any window of ``window_ms``."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


def error_response(exc: SimError) -> web.Response:
    return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.status)


@web.middleware
async def _errors_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except SimError as exc:
        return error_response(exc)


@web.middleware
async def _peers_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if not request.path.startswith("/sim/"):  # the admin API's own client is not counted
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            request.app["simulator"].peers.add((str(peer[0]), int(peer[1])))
    return await handler(request)


def run(
    *, host: str, port: int, simulator: Simulator, extensions: Iterable[Extension] = ()
) -> None:
    web.run_app(simulator.app(extensions), host=host, port=port, access_log=None, print=None)
