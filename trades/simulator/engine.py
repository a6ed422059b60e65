"""The simulator's state: markets, accounts, orders and the matching rules. No I/O here."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

FEE_RATE = Decimal("0.001")  # 0.1 % taker, charged in the quote asset
ZERO = Decimal("0")


class SimError(Exception):
    """An error answered the way Binance answers it: HTTP status, code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass(frozen=True)
class Market:
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal

    @property
    def symbol_id(self) -> str:
        return f"{self.base}{self.quote}"

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"


def default_market(symbol: str) -> Market:
    base, quote = symbol.split("/")
    if quote in ("USDT", "USDC", "BUSD"):
        return Market(
            base, quote, Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal("5")
        )
    step = Decimal("1") if base in ("ADA", "XRP", "TRX", "DOGE") else Decimal("0.001")
    return Market(base, quote, Decimal("0.00000001"), step, step, Decimal("0.0001"))


@dataclass
class Account:
    api_key: str
    secret: str
    balances: dict[str, Decimal]
    locked: dict[str, Decimal] = field(default_factory=dict)
    can_trade: bool = True

    def free(self, asset: str) -> Decimal:
        return self.balances.get(asset, ZERO)

    def add(self, asset: str, amount: Decimal) -> None:
        self.balances[asset] = self.free(asset) + amount


@dataclass
class Fill:
    trade_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int


@dataclass
class SimOrder:
    order_id: int
    api_key: str
    market: Market
    client_order_id: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    orig_qty: Decimal
    price: Decimal
    time_in_force: str
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    quote_qty: Decimal = ZERO
    update_ms: int = 0
    reserved_asset: str = ""
    reserved: Decimal = ZERO
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def as_binance(self, *, full: bool = False) -> dict:
        body = {
            "symbol": self.market.symbol_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": _s(self.price),
            "origQty": _s(self.orig_qty),
            "executedQty": _s(self.executed_qty),
            "cummulativeQuoteQty": _s(self.quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": self.time_ms,
            "transactTime": self.update_ms or self.time_ms,
            "updateTime": self.update_ms or self.time_ms,
            "isWorking": True,
            "workingTime": self.time_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "NONE",
        }
        if full:
            body["fills"] = [
                {
                    "price": _s(f.price),
                    "qty": _s(f.qty),
                    "commission": _s(f.commission),
                    "commissionAsset": f.commission_asset,
                    "tradeId": f.trade_id,
                }
                for f in self.fills
            ]
        return body


def _s(value: Decimal) -> str:
    return f"{value:.8f}"


def now_ms() -> int:
    return int(time.time() * 1000)


PriceSource = Callable[[Market], "tuple[Decimal, Decimal, Decimal] | None"]


class Exchange:
    """Everything the simulator knows. Single-threaded: the asyncio server owns it."""

    def __init__(self, *, markets: list[Market], price_source: PriceSource) -> None:
        self.markets = {m.symbol_id: m for m in markets}
        self.price_source = price_source  # -> (close, high, low) of the current candle
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, SimOrder] = {}
        self.by_client_id: dict[tuple[str, str], SimOrder] = {}
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)

    # --- accounts -----------------------------------------------------------------------
    def account_add(self, *, api_key: str, secret: str, balances: dict[str, str]) -> None:
        self.accounts[api_key] = Account(
            api_key, secret, {k: Decimal(str(v)) for k, v in balances.items()}
        )

    def account(self, api_key: str) -> Account:
        account = self.accounts.get(api_key)
        if account is None:
            raise SimError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return account

    # --- orders -------------------------------------------------------------------------
    def market(self, symbol_id: str | None) -> Market:
        market = self.markets.get(symbol_id or "")
        if market is None:
            raise SimError(400, -1121, "Invalid symbol.")
        return market

    def order_find(
        self, account: Account, market: Market, order_id: str | None, client_id: str | None
    ) -> SimOrder:
        order = None
        if order_id:
            order = self.orders.get(int(order_id))
        elif client_id:
            order = self.by_client_id.get((account.api_key, client_id))
        if order is None or order.api_key != account.api_key or order.market != market:
            raise SimError(400, -2013, "Order does not exist.")
        return order

    def order_create(
        self,
        *,
        account: Account,
        market: Market,
        side: str,
        type_: str,
        quantity: str | None,
        price: str | None,
        client_order_id: str | None,
        time_in_force: str | None,
    ) -> SimOrder:
        if not account.can_trade:
            raise SimError(400, -2010, "This account may not place or cancel orders.")
        client_order_id = client_order_id or f"sim-{next(self._order_ids)}"
        if (account.api_key, client_order_id) in self.by_client_id:
            raise SimError(400, -2010, "Duplicate order sent.")
        if side not in ("BUY", "SELL") or type_ not in ("MARKET", "LIMIT"):
            raise SimError(400, -1116, "Invalid orderType.")
        qty = _decimal(quantity, "quantity")
        if qty <= 0 or qty % market.step_size != 0 or qty < market.min_qty:
            raise SimError(400, -1013, "Filter failure: LOT_SIZE")
        current = self.price_source(market)
        if current is None:
            raise SimError(400, -1013, "Market is closed.")
        close = current[0]
        limit = _decimal(price, "price") if type_ == "LIMIT" else ZERO
        if type_ == "LIMIT" and (limit <= 0 or limit % market.tick_size != 0):
            raise SimError(400, -1013, "Filter failure: PRICE_FILTER")
        notional = qty * (limit if type_ == "LIMIT" else close)
        if notional < market.min_notional:
            raise SimError(400, -1013, "Filter failure: NOTIONAL")
        ts = now_ms()
        order = SimOrder(
            order_id=next(self._order_ids),
            api_key=account.api_key,
            market=market,
            client_order_id=client_order_id,
            side=side,
            type=type_,
            orig_qty=qty,
            price=limit,
            time_in_force=time_in_force or ("GTC" if type_ == "LIMIT" else ""),
            time_ms=ts,
        )
        self._reserve(account, order, notional)
        self.orders[order.order_id] = order
        self.by_client_id[(account.api_key, client_order_id)] = order
        if type_ == "MARKET":
            self._fill(order, close)
        elif (side == "BUY" and close <= limit) or (side == "SELL" and close >= limit):
            self._fill(order, limit)
        return order

    def _reserve(self, account: Account, order: SimOrder, notional: Decimal) -> None:
        m = order.market
        if order.side == "BUY":
            asset, amount = m.quote, notional * (1 + FEE_RATE)
        else:
            asset, amount = m.base, order.orig_qty
        if account.free(asset) < amount:
            raise SimError(400, -2010, "Account has insufficient balance for requested action.")
        account.add(asset, -amount)
        order.reserved_asset, order.reserved = asset, amount

    def _fill(self, order: SimOrder, price: Decimal) -> None:
        account = self.accounts[order.api_key]
        m = order.market
        qty = order.orig_qty - order.executed_qty
        quote = (qty * price).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
        commission = (quote * FEE_RATE).quantize(Decimal("0.00000001"))
        ts = now_ms()
        order.fills.append(Fill(next(self._trade_ids), price, qty, commission, m.quote, ts))
        order.executed_qty += qty
        order.quote_qty += quote
        order.status, order.update_ms = "FILLED", ts
        if order.side == "BUY":
            account.add(m.base, qty)
            account.add(m.quote, order.reserved - quote - commission)
        else:
            account.add(m.quote, quote - commission)
        order.reserved = ZERO

    def order_cancel(self, order: SimOrder) -> SimOrder:
        if not order.is_open:
            raise SimError(400, -2011, "Unknown order sent.")
        order.status, order.update_ms = "CANCELED", now_ms()
        self.accounts[order.api_key].add(order.reserved_asset, order.reserved)
        order.reserved = ZERO
        return order

    def limits_match(self) -> int:
        """Fill open limit orders that the current candle crossed. Returns the fills made."""
        filled = 0
        for order in [o for o in self.orders.values() if o.is_open and o.type == "LIMIT"]:
            current = self.price_source(order.market)
            if current is None:
                continue
            _, high, low = current
            if (order.side == "BUY" and low <= order.price) or (
                order.side == "SELL" and high >= order.price
            ):
                self._fill(order, order.price)
                filled += 1
        return filled


def _decimal(value: str | None, name: str) -> Decimal:
    try:
        return Decimal(value or "")
    except ArithmeticError as exc:
        raise SimError(400, -1100, f"Illegal characters found in parameter '{name}'.") from exc
