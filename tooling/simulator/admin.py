"""The simulator's unsigned admin API (bind the server to loopback).

``POST /sim/accounts`` (one or a list of ``{api_key, secret, balances, can_trade}``),
``POST /sim/faults`` (rates, ``hold_s``, ``latency_ms``, ``next: {kind: count}``, ``keys``),
``POST /sim/clock`` (``{now_ms}``; null for "newest candle"), ``POST /sim/refresh``,
``POST /sim/reset``, ``GET /sim/orders``, ``GET /sim/stats`` (counters, and ``connections``:
the client connections the exchange API was asked on), ``GET /sim/requests`` (peak signed
requests per second, overall and per key).

Behind the platform's back, as the account's owner would: ``POST /sim/accounts/edit``
(``{api_key, balances?: {asset: amount}, restrictions?: {...}, revoked?: bool}``: set balances,
change the key's permissions, revoke it) and ``POST /sim/orders`` (``{api_key, symbol, side,
type, quantity, price?, client_order_id?}``: an order placed outside the platform).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from aiohttp import web

from tooling.simulator.engine import SimError

if TYPE_CHECKING:
    from tooling.simulator.server import Simulator


class Admin:
    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator

    async def accounts(self, request: web.Request) -> web.Response:
        body = await request.json()
        accounts = body if isinstance(body, list) else [body]
        for a in accounts:
            self.sim.exchange.account_add(
                api_key=a["api_key"], secret=a["secret"], balances=a.get("balances", {})
            )
            if "can_trade" in a:
                self.sim.exchange.accounts[a["api_key"]].can_trade = bool(a["can_trade"])
        return web.json_response({"accounts": len(self.sim.exchange.accounts)})

    async def account_edit(self, request: web.Request) -> web.Response:
        body = await request.json()
        ex = self.sim.exchange
        key = body.get("api_key", "")
        account = ex.accounts.get(key) or ex.revoked.get(key)
        if account is None:
            return web.json_response({"error": f"no account {key!r}"}, status=404)
        for asset, amount in (body.get("balances") or {}).items():
            account.balances[asset] = Decimal(str(amount))
        account.restrictions.update(
            {k: bool(v) for k, v in (body.get("restrictions") or {}).items()}
        )
        if "revoked" in body:
            ex.revoke(key, revoked=bool(body["revoked"]))
        return web.json_response(
            {
                "api_key": key,
                "balances": {a: str(v) for a, v in account.balances.items()},
                "restrictions": account.restrictions,
                "revoked": key in ex.revoked,
            }
        )

    async def order_place(self, request: web.Request) -> web.Response:
        b = await request.json()
        ex = self.sim.exchange
        try:
            order = ex.order_create(
                account=ex.account(b.get("api_key", "")),
                market=ex.market(str(b.get("symbol", "")).replace("/", "")),
                side=str(b.get("side", "")).upper(),
                type_=str(b.get("type", "MARKET")).upper(),
                quantity=b.get("quantity"),
                price=b.get("price"),
                client_order_id=b.get("client_order_id"),
                time_in_force=b.get("time_in_force"),
            )
        except SimError as exc:
            return web.json_response({"error": exc.msg, "code": exc.code}, status=400)
        return web.json_response(order.as_binance(full=True))

    async def requests(self, request: web.Request) -> web.Response:
        window = int(request.query.get("window_ms", "1000"))
        since = int(request.query.get("since", "0"))
        return web.json_response(self.sim.request_rates(window_ms=window, since=since))

    async def faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        f = self.sim.faults
        for name in ("fail_rate", "timeout_after_accept_rate", "rate_limit_rate", "hold_s"):
            if name in body:
                setattr(f, name, float(body[name]))
        if "latency_ms" in body:
            self.sim.latency_s = float(body["latency_ms"]) / 1000
        for kind, count in (body.get("next") or {}).items():
            f.pending[kind] = int(count)
        if "keys" in body:
            f.keys = set(body["keys"] or [])
        return web.json_response(
            {
                "fail_rate": f.fail_rate,
                "timeout_after_accept_rate": f.timeout_after_accept_rate,
                "rate_limit_rate": f.rate_limit_rate,
                "hold_s": f.hold_s,
                "latency_ms": self.sim.latency_s * 1000,
                "pending": dict(f.pending),
            }
        )

    async def clock(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        now_ms = body.get("now_ms", ...) if isinstance(body, dict) else ...
        if now_ms is not None and (type(now_ms) is not int or now_ms < 0):
            return web.json_response(
                {"error": 'expected {"now_ms": <ms since the epoch> or null}'}, status=400
            )
        self.sim.feed.clock_ms = now_ms
        await self.sim.refresh()
        return web.json_response({"now_ms": self.sim.feed.clock_ms})

    async def refresh(self, request: web.Request) -> web.Response:
        return web.json_response({"added": await self.sim.refresh()})

    async def reset(self, request: web.Request) -> web.Response:
        self.sim.reset()
        await self.sim.refresh()
        return web.json_response({"ok": True})

    async def orders(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "order_id": o.order_id,
                    "api_key": o.api_key,
                    "client_order_id": o.client_order_id,
                    "symbol": o.market.symbol,
                    "side": o.side,
                    "type": o.type,
                    "quantity": str(o.orig_qty),
                    "price": str(o.price),
                    "stop_price": str(o.stop_price),
                    "order_list_id": o.order_list_id,
                    "status": o.status,
                    "executed": str(o.executed_qty),
                    "quote": str(o.quote_qty),
                    "fee": str(sum(f.commission for f in o.fills)),
                    "time_ms": o.time_ms,
                    "update_ms": o.update_ms or o.time_ms,
                }
                for o in self.sim.exchange.orders.values()
            ]
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.sim.stats,
                "orders": len(self.sim.exchange.orders),
                "connections": len(self.sim.peers),
            }
        )


def install(simulator: Simulator, app: web.Application) -> None:
    admin = Admin(simulator)
    r = app.router
    r.add_post("/sim/accounts", admin.accounts)
    r.add_post("/sim/accounts/edit", admin.account_edit)
    r.add_post("/sim/orders", admin.order_place)
    r.add_get("/sim/requests", admin.requests)
    r.add_post("/sim/faults", admin.faults)
    r.add_post("/sim/clock", admin.clock)
    r.add_post("/sim/refresh", admin.refresh)
    r.add_post("/sim/reset", admin.reset)
    r.add_get("/sim/orders", admin.orders)
    r.add_get("/sim/stats", admin.stats)
