"""A subset of Binance's spot REST API, enough for the unmodified ccxt client.

Public: ping, time, exchangeInfo, klines, ticker (24hr, price). Signed (HMAC-SHA256 of the
query string + body with the account's secret, ``X-MBX-APIKEY`` naming the account,
``timestamp`` within ``recvWindow``): order (create, query, cancel; market, limit and the
stop-loss / take-profit types), orderList/oco, openOrders, allOrders, account, myTrades,
the key's permissions (``sapi/v1/account/apiRestrictions``), and empty answers for the
wallet / margin listings ccxt asks for while loading markets with keys set.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING

from aiohttp import web

from tooling.simulator.engine import ORDER_TYPES, Market, SimError, SimOrder, now_ms

if TYPE_CHECKING:
    from tooling.simulator.server import Simulator


class BinanceRest:
    def __init__(self, simulator: Simulator) -> None:
        self.sim = simulator

    # --- public ---------------------------------------------------------------------------
    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def time(self, request: web.Request) -> web.Response:
        self.sim.stats["time"] += 1
        return web.json_response({"serverTime": now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        self.sim.stats["exchangeInfo"] += 1
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": now_ms(),
                "rateLimits": [],
                "exchangeFilters": [],
                "symbols": [symbol_info(m) for m in self.sim.exchange.markets.values()],
            }
        )

    async def klines(self, request: web.Request) -> web.Response:
        q = request.query
        market = self.sim.exchange.market(q.get("symbol"))
        rows = self.sim.feed.klines(
            market.symbol,
            start=int(q["startTime"]) if "startTime" in q else None,
            end=int(q["endTime"]) if "endTime" in q else None,
            limit=min(int(q.get("limit", 500)), 1000),
        )
        step = self.sim.feed.series[market.symbol].step_ms if rows else 0
        return web.json_response(
            [
                [
                    t,
                    str(o),
                    str(h),
                    str(lo),
                    str(c),
                    str(v),
                    t + step - 1,
                    str(c * v),
                    1,
                    "0",
                    "0",
                    "0",
                ]
                for t, o, h, lo, c, v in rows
            ]
        )

    def _current(self, market: Market) -> tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]:
        row = self.sim.feed.current(market.symbol)
        if row is None:
            raise SimError(400, -1013, "Market is closed.")
        return row

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        market = self.sim.exchange.market(request.query.get("symbol"))
        t, o, h, lo, c, v = self._current(market)
        return web.json_response(
            {
                "symbol": market.symbol_id,
                "openPrice": str(o),
                "highPrice": str(h),
                "lowPrice": str(lo),
                "lastPrice": str(c),
                "volume": str(v),
                "quoteVolume": str(c * v),
                "bidPrice": str(c),
                "askPrice": str(c),
                "openTime": t,
                "closeTime": now_ms(),
                "count": 1,
                "priceChange": str(c - o),
                "priceChangePercent": "0",
                "weightedAvgPrice": str(c),
            }
        )

    async def ticker_price(self, request: web.Request) -> web.Response:
        market = self.sim.exchange.market(request.query.get("symbol"))
        row = self._current(market)
        return web.json_response({"symbol": market.symbol_id, "price": str(row[4])})

    # --- signed ---------------------------------------------------------------------------
    async def order_create(self, request: web.Request) -> web.Response:
        sim = self.sim
        api_key, p = await sim.signed_params(request)
        sim.stats["order_create"] += 1
        await sim.latency()
        fault = await sim.fault(api_key, creating=True)
        order = sim.exchange.order_create(
            account=sim.exchange.account(api_key),
            market=sim.exchange.market(p.get("symbol")),
            side=p.get("side", ""),
            type_=p.get("type", ""),
            quantity=p.get("quantity"),
            price=p.get("price"),
            client_order_id=p.get("newClientOrderId"),
            time_in_force=p.get("timeInForce"),
            stop_price=p.get("stopPrice"),
        )
        if fault == "timeout_after_accept":
            # The order stands; the client gives up waiting and must look it up.
            await asyncio.sleep(sim.faults.hold_s)
        return web.json_response(order.as_binance(full=p.get("newOrderRespType") == "FULL"))

    async def oco_create(self, request: web.Request) -> web.Response:
        """``POST /api/v3/orderList/oco``: a take profit and a stop loss, one cancels the other."""
        sim = self.sim
        api_key, p = await sim.signed_params(request)
        sim.stats["oco_create"] += 1
        await sim.latency()
        fault = await sim.fault(api_key, creating=True)
        legs = {
            side: {
                key: p.get(f"{side}{key[0].upper()}{key[1:]}")
                for key in ("type", "price", "stopPrice", "clientOrderId", "timeInForce")
            }
            for side in ("above", "below")
        }
        list_id, list_cid, orders = sim.exchange.oco_create(
            account=sim.exchange.account(api_key),
            market=sim.exchange.market(p.get("symbol")),
            side=p.get("side", ""),
            quantity=p.get("quantity"),
            above=legs["above"],
            below=legs["below"],
            list_client_order_id=p.get("listClientOrderId"),
        )
        if fault == "timeout_after_accept":
            await asyncio.sleep(sim.faults.hold_s)
        return web.json_response(
            {
                "orderListId": list_id,
                "contingencyType": "OCO",
                "listStatusType": "EXEC_STARTED",
                "listOrderStatus": "EXECUTING",
                "listClientOrderId": list_cid,
                "transactionTime": now_ms(),
                "symbol": orders[0].market.symbol_id,
                "orders": [
                    {
                        "symbol": o.market.symbol_id,
                        "orderId": o.order_id,
                        "clientOrderId": o.client_order_id,
                    }
                    for o in orders
                ],
                "orderReports": [o.as_binance() for o in orders],
            }
        )

    def _find(self, api_key: str, p: dict[str, str]) -> SimOrder:
        ex = self.sim.exchange
        return ex.order_find(
            ex.account(api_key),
            ex.market(p.get("symbol")),
            p.get("orderId"),
            p.get("origClientOrderId"),
        )

    async def order_query(self, request: web.Request) -> web.Response:
        api_key, p = await self.sim.signed_params(request)
        self.sim.stats["order_query"] += 1
        await self.sim.latency()
        await self.sim.fault(api_key)
        return web.json_response(self._find(api_key, p).as_binance())

    async def order_cancel(self, request: web.Request) -> web.Response:
        api_key, p = await self.sim.signed_params(request)
        self.sim.stats["order_cancel"] += 1
        await self.sim.latency()
        await self.sim.fault(api_key)
        order = self.sim.exchange.order_cancel(self._find(api_key, p))
        return web.json_response(order.as_binance())

    def _orders_of(self, api_key: str, symbol_id: str | None) -> list[SimOrder]:
        return [
            o
            for o in self.sim.exchange.orders.values()
            if o.api_key == api_key and (not symbol_id or o.market.symbol_id == symbol_id)
        ]

    async def open_orders(self, request: web.Request) -> web.Response:
        api_key, p = await self.sim.signed_params(request)
        orders = self._orders_of(api_key, p.get("symbol"))
        return web.json_response([o.as_binance() for o in orders if o.is_open])

    async def all_orders(self, request: web.Request) -> web.Response:
        api_key, p = await self.sim.signed_params(request)
        self.sim.exchange.market(p.get("symbol"))
        orders = self._orders_of(api_key, p["symbol"])
        return web.json_response([o.as_binance() for o in orders])

    async def my_trades(self, request: web.Request) -> web.Response:
        api_key, p = await self.sim.signed_params(request)
        market = self.sim.exchange.market(p.get("symbol"))
        trades = []
        for o in self._orders_of(api_key, market.symbol_id):
            if p.get("orderId") and str(o.order_id) != p["orderId"]:
                continue
            for f in o.fills:
                trades.append(
                    {
                        "symbol": market.symbol_id,
                        "id": f.trade_id,
                        "orderId": o.order_id,
                        "orderListId": -1,
                        "price": str(f.price),
                        "qty": str(f.qty),
                        "quoteQty": str(f.price * f.qty),
                        "commission": str(f.commission),
                        "commissionAsset": f.commission_asset,
                        "time": f.time_ms,
                        "isBuyer": o.side == "BUY",
                        "isMaker": o.type == "LIMIT",
                        "isBestMatch": True,
                    }
                )
        return web.json_response(trades)

    async def account(self, request: web.Request) -> web.Response:
        api_key, _ = await self.sim.signed_params(request)
        account = self.sim.exchange.account(api_key)
        locked: dict[str, Decimal] = {}
        for o in self.sim.exchange.orders.values():
            if o.api_key == api_key and o.is_open:
                locked[o.reserved_asset] = locked.get(o.reserved_asset, Decimal(0)) + o.reserved
        assets = sorted({*account.balances, *locked})
        return web.json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "canTrade": account.can_trade,
                "canWithdraw": False,
                "canDeposit": False,
                "updateTime": now_ms(),
                "accountType": "SPOT",
                "balances": [
                    {
                        "asset": a,
                        "free": f"{account.free(a):.8f}",
                        "locked": f"{locked.get(a, Decimal(0)):.8f}",
                    }
                    for a in assets
                ],
                "permissions": ["SPOT"],
            }
        )

    async def api_restrictions(self, request: web.Request) -> web.Response:
        """``GET /sapi/v1/account/apiRestrictions``: what this key may do."""
        api_key, _ = await self.sim.signed_params(request)
        self.sim.stats["api_restrictions"] += 1
        account = self.sim.exchange.account(api_key)
        return web.json_response({**account.restrictions, "createTime": account.created_ms})

    async def empty_listing(self, request: web.Request) -> web.Response:
        await self.sim.signed_params(request)
        return web.json_response([])


def install(simulator: Simulator, app: web.Application) -> None:
    api = BinanceRest(simulator)
    r = app.router
    r.add_get("/api/v3/ping", api.ping)
    r.add_get("/api/v3/time", api.time)
    r.add_get("/api/v3/exchangeInfo", api.exchange_info)
    r.add_get("/api/v3/klines", api.klines)
    r.add_get("/api/v3/ticker/24hr", api.ticker_24hr)
    r.add_get("/api/v3/ticker/price", api.ticker_price)
    r.add_post("/api/v3/order", api.order_create)
    r.add_post("/api/v3/orderList/oco", api.oco_create)
    r.add_get("/api/v3/order", api.order_query)
    r.add_delete("/api/v3/order", api.order_cancel)
    r.add_get("/api/v3/openOrders", api.open_orders)
    r.add_get("/api/v3/allOrders", api.all_orders)
    r.add_get("/api/v3/myTrades", api.my_trades)
    r.add_get("/api/v3/account", api.account)
    r.add_get("/sapi/v1/account/apiRestrictions", api.api_restrictions)
    # Asked for by ccxt's load_markets when keys are set; nothing to list here.
    r.add_get("/sapi/v1/capital/config/getall", api.empty_listing)
    r.add_get("/sapi/v1/margin/allPairs", api.empty_listing)
    r.add_get("/sapi/v1/margin/isolated/allPairs", api.empty_listing)


def symbol_info(m: Market) -> dict:
    return {
        "symbol": m.symbol_id,
        "status": "TRADING",
        "baseAsset": m.base,
        "baseAssetPrecision": 8,
        "quoteAsset": m.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": False,
        "ocoAllowed": True,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": f"{m.tick_size:f}",
                "maxPrice": "1000000.00000000",
                "tickSize": f"{m.tick_size:f}",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": f"{m.min_qty:f}",
                "maxQty": "9000000.00000000",
                "stepSize": f"{m.step_size:f}",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": f"{m.min_notional:f}",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }
