"""The simulator's state: markets, accounts, orders and the matching rules. No I/O here."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

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


# A key as a careful user makes it: it reads and trades spot, cannot withdraw, and is bound to
# the platform's addresses.
DEFAULT_RESTRICTIONS = {
    "ipRestrict": True,
    "enableReading": True,
    "enableWithdrawals": False,
    "enableInternalTransfer": False,
    "enableMargin": False,
    "enableFutures": False,
    "permitsUniversalTransfer": False,
    "enableVanillaOptions": False,
    "enableFixApiTrade": False,
    "enableFixReadOnly": False,
    "enableSpotAndMarginTrading": True,
    "enablePortfolioMarginTrading": False,
}


@dataclass
class Account:
    api_key: str
    secret: str
    balances: dict[str, Decimal]
    locked: dict[str, Decimal] = field(default_factory=dict)
    can_trade: bool = True
    # What ``GET /sapi/v1/account/apiRestrictions`` answers for this key (tests change it).
    restrictions: dict[str, bool] = field(default_factory=lambda: dict(DEFAULT_RESTRICTIONS))
    created_ms: int = field(default_factory=lambda: now_ms())

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
    stop_price: Decimal = ZERO  # STOP_LOSS* / TAKE_PROFIT*: the trigger
    triggered: bool = False  # a *_LIMIT conditional order now resting as a limit
    order_list_id: int = -1  # an OCO's legs share it; one filling expires the other
    sibling: int = 0  # the other leg's order id in an OCO
    # The candle current when it was placed: it traded before the order existed, so only a
    # later candle's range can fill or trigger it.
    placed_in_ms: int = -1

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def as_binance(self, *, full: bool = False) -> dict:
        body = {
            "symbol": self.market.symbol_id,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "price": _s(self.price),
            "origQty": _s(self.orig_qty),
            "executedQty": _s(self.executed_qty),
            "cummulativeQuoteQty": _s(self.quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": _s(self.stop_price),
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


CONDITIONAL = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
ORDER_TYPES = ("MARKET", "LIMIT", *CONDITIONAL)


def _crossed(order: SimOrder, high: Decimal, low: Decimal) -> bool:
    """Whether a candle reaching ``high`` and ``low`` triggers this conditional order.

    A stop loss sells when the price falls to it (buys when it rises); a take profit the
    other way round.
    """
    rising = (order.side == "BUY") == order.type.startswith("STOP_LOSS")
    return high >= order.stop_price if rising else low <= order.stop_price


class Quote(NamedTuple):
    """The current candle of a market: the last one closed by the simulator's clock."""

    close: Decimal
    high: Decimal
    low: Decimal
    open_ms: int


PriceSource = Callable[[Market], "Quote | None"]


class Exchange:
    """Everything the simulator knows. Single-threaded: the asyncio server owns it."""

    def __init__(self, *, markets: list[Market], price_source: PriceSource) -> None:
        self.markets = {m.symbol_id: m for m in markets}
        self.price_source = price_source
        self.accounts: dict[str, Account] = {}
        self.revoked: dict[str, Account] = {}  # keys their owner revoked: refused as unknown
        self.orders: dict[int, SimOrder] = {}
        self.by_client_id: dict[tuple[str, str], SimOrder] = {}
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._list_ids = itertools.count(1)

    # --- accounts -----------------------------------------------------------------------
    def account_add(self, *, api_key: str, secret: str, balances: dict[str, str]) -> None:
        self.accounts[api_key] = Account(
            api_key, secret, {k: Decimal(str(v)) for k, v in balances.items()}
        )

    def revoke(self, api_key: str, *, revoked: bool = True) -> None:
        source, target = (self.accounts, self.revoked) if revoked else (self.revoked, self.accounts)
        if api_key in source:
            target[api_key] = source.pop(api_key)

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
        stop_price: str | None = None,
        order_list_id: int = -1,
        reserve: bool = True,
    ) -> SimOrder:
        if not account.can_trade:
            raise SimError(400, -2010, "This account may not place or cancel orders.")
        client_order_id = client_order_id or f"sim-{next(self._order_ids)}"
        if (account.api_key, client_order_id) in self.by_client_id:
            raise SimError(400, -2010, "Duplicate order sent.")
        if side not in ("BUY", "SELL") or type_ not in ORDER_TYPES:
            raise SimError(400, -1116, "Invalid orderType.")
        qty = _decimal(quantity, "quantity")
        if qty <= 0 or qty % market.step_size != 0 or qty < market.min_qty:
            raise SimError(400, -1013, "Filter failure: LOT_SIZE")
        current = self.price_source(market)
        if current is None:
            raise SimError(400, -1013, "Market is closed.")
        close = current.close
        has_limit = type_ == "LIMIT" or type_.endswith("_LIMIT")
        limit = _decimal(price, "price") if has_limit else ZERO
        if has_limit and (limit <= 0 or limit % market.tick_size != 0):
            raise SimError(400, -1013, "Filter failure: PRICE_FILTER")
        stop = _decimal(stop_price, "stopPrice") if type_ in CONDITIONAL else ZERO
        if type_ in CONDITIONAL and (stop <= 0 or stop % market.tick_size != 0):
            raise SimError(400, -1013, "Filter failure: PRICE_FILTER")
        notional = qty * (limit if has_limit else stop if type_ in CONDITIONAL else close)
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
            time_in_force=time_in_force or ("GTC" if has_limit else ""),
            time_ms=ts,
            stop_price=stop,
            order_list_id=order_list_id,
            placed_in_ms=current.open_ms,
        )
        if type_ in CONDITIONAL and _crossed(order, close, close):
            raise SimError(400, -2010, "Stop price would trigger immediately.")
        if reserve:
            self._reserve(account, order, notional)
        self.orders[order.order_id] = order
        self.by_client_id[(account.api_key, client_order_id)] = order
        if type_ in CONDITIONAL:
            pass  # rests until a candle crosses its stop price
        elif type_ == "MARKET":
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
        sibling = self.orders.get(order.sibling)
        if sibling is not None and sibling.is_open:
            # One cancels the other: the shared reservation was this leg's to spend.
            sibling.status, sibling.update_ms, sibling.reserved = "EXPIRED", ts, ZERO

    def order_cancel(self, order: SimOrder) -> SimOrder:
        if not order.is_open:
            raise SimError(400, -2011, "Unknown order sent.")
        for leg in (order, self.orders.get(order.sibling)):  # an OCO is cancelled as a whole
            if leg is not None and leg.is_open:
                leg.status, leg.update_ms = "CANCELED", now_ms()
                self.accounts[leg.api_key].add(leg.reserved_asset, leg.reserved)
                leg.reserved = ZERO
        return order

    def oco_create(
        self,
        *,
        account: Account,
        market: Market,
        side: str,
        quantity: str | None,
        above: dict[str, str | None],
        below: dict[str, str | None],
        list_client_order_id: str | None,
    ) -> tuple[int, str, list[SimOrder]]:
        """Binance's ``orderList/oco``: two legs on one reservation; one filling expires the other.

        ``above`` and ``below`` hold each leg's type, price, stopPrice, clientOrderId and
        timeInForce. A sell's take profit is above the market and its stop below; a buy's the
        other way round.
        """
        expected = ("TAKE_PROFIT", "STOP_LOSS") if side == "SELL" else ("STOP_LOSS", "TAKE_PROFIT")
        for leg, kind in zip((above, below), expected, strict=True):
            if (leg.get("type") or "") not in (kind, f"{kind}_LIMIT"):
                raise SimError(400, -1116, "Invalid orderType for this OCO leg.")
        for leg in (above, below):
            cid = leg.get("clientOrderId")
            if cid and (account.api_key, cid) in self.by_client_id:
                raise SimError(400, -2010, "Duplicate order sent.")
        list_id = next(self._list_ids)
        legs: list[SimOrder] = []
        for i, leg in enumerate((above, below)):
            try:
                order = self.order_create(
                    account=account,
                    market=market,
                    side=side,
                    type_=leg.get("type") or "",
                    quantity=quantity,
                    price=leg.get("price"),
                    client_order_id=leg.get("clientOrderId"),
                    time_in_force=leg.get("timeInForce"),
                    stop_price=leg.get("stopPrice"),
                    order_list_id=list_id,
                    reserve=i == 0,  # one reservation for both legs
                )
            except SimError:
                for placed in legs:  # all or nothing
                    self.order_cancel(placed)
                    del self.orders[placed.order_id]
                    del self.by_client_id[(account.api_key, placed.client_order_id)]
                raise
            legs.append(order)
        first, second = legs
        first.sibling, second.sibling = second.order_id, first.order_id
        second.reserved_asset = first.reserved_asset
        cid = list_client_order_id or f"sim-list-{list_id}"
        return list_id, cid, legs

    def limits_match(self) -> int:
        """Fill open orders that the current candle crossed, if it closed after they were
        placed. Returns the fills made.

        Conditional orders trigger when the candle crosses their stop price (stop losses
        before take profits: the conservative reading of a candle touching both); a market
        one fills at its stop price, a limit one then rests as a limit at its price.
        """
        filled = 0
        resting = [o for o in self.orders.values() if o.is_open and o.type != "MARKET"]
        resting.sort(key=lambda o: not o.type.startswith("STOP_LOSS"))
        for order in resting:
            current = self.price_source(order.market)
            if current is None or not order.is_open:  # an OCO sibling may have just filled
                continue
            if current.open_ms <= order.placed_in_ms:
                continue
            high, low = current.high, current.low
            if order.type in CONDITIONAL and not order.triggered:
                if not _crossed(order, high, low):
                    continue
                if not order.type.endswith("_LIMIT"):
                    self._fill(order, order.stop_price)
                    filled += 1
                    continue
                order.triggered = True
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
