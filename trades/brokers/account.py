"""Reading a live account through ccxt: balances, positions, open orders, the key's permissions.

The reconciliation and the periodic re-check of keys ask these of every live credential. Each
request takes a token from the same Redis buckets as the fan-out's orders (per credential and
per exchange, ``Hub.buckets``), so however many credentials are read, no key and no exchange is
asked faster than its rate, whichever process asks. One credential's failure is that
credential's snapshot, never the batch's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import ccxt

from markets.exchange_data import exchange_error_text
from subscriptions.keycheck import PERMISSION_METHODS
from trades.brokers.base import CredentialFailure
from trades.brokers.hub import CredentialRef, Exchange, ExchangeUnsupported, Hub, get_hub

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class AccountQuery:
    """What to read of one credential's account."""

    spot_symbols: tuple[str, ...] = ()  # open orders per symbol; the balance once
    derivative_symbols: tuple[str, ...] = ()  # positions and open orders per symbol
    permissions: bool = False  # the key's permissions, where the exchange exposes them
    balance: bool = False


@dataclass(frozen=True)
class ExchangeOrder:
    symbol: str
    client_order_id: str
    exchange_order_id: str
    side: str
    amount: Decimal
    filled: Decimal
    price: Decimal | None
    status: str


@dataclass
class AccountSnapshot:
    balances: dict[str, Decimal] = field(default_factory=dict)  # asset -> total (free + used)
    positions: dict[str, Decimal] = field(default_factory=dict)  # symbol -> signed base amount
    open_orders: list[ExchangeOrder] = field(default_factory=list)
    permissions: dict[str, Any] | None = None  # None: not asked, or not exposed
    requests: int = 0
    error: str = ""
    failure: CredentialFailure | None = None

    @property
    def ok(self) -> bool:
        return not self.error


def live_accounts_fetch(
    items: Sequence[tuple[CredentialRef, AccountQuery]], *, timeout_s: float = 600.0
) -> list[AccountSnapshot]:
    """The snapshot of every (credential, query), in order; waits for the rate limits."""
    if not items:
        return []
    hub = get_hub()
    coros = [_snapshot(hub, ref, query) for ref, query in items]
    snapshots = hub.run(_gather(coros), timeout_s)
    hub.freeze_pool()
    return snapshots


async def _gather(coros: Sequence[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*coros))


async def _snapshot(hub: Hub, ref: CredentialRef, query: AccountQuery) -> AccountSnapshot:
    snapshot = AccountSnapshot()
    if ref.unusable:
        snapshot.error, snapshot.failure = ref.unusable, CredentialFailure.DECRYPT
        return snapshot
    try:
        exchange = await hub.instance(ref)
        await _read(hub, ref, exchange, query, snapshot)
    except Exception as exc:
        snapshot.error, snapshot.failure = _failure(ref, exc)
    return snapshot


async def _read(
    hub: Hub, ref: CredentialRef, exchange: Exchange, query: AccountQuery, snap: AccountSnapshot
) -> None:
    async def call(fn: Callable[[], Awaitable[Any]]) -> Any:
        # The token first: a request waiting for its rate holds no connection slot.
        await hub.limiter.acquire(*hub.buckets(ref), max_wait_s=300.0)
        async with hub.semaphore:
            snap.requests += 1
            return await fn()

    if query.permissions:
        method = PERMISSION_METHODS.get(ref.exchange)
        if method and hasattr(exchange, method):
            snap.permissions = await call(getattr(exchange, method))
    if query.balance:
        balance = await call(exchange.fetch_balance)
        snap.balances = {
            asset: _dec(total) or Decimal(0)
            for asset, total in (balance.get("total") or {}).items()
            if total is not None
        }
    if query.derivative_symbols:
        symbols = list(query.derivative_symbols)
        rows = await call(lambda: exchange.fetch_positions(symbols))
        snap.positions = _positions(rows)
    for symbol in (*query.spot_symbols, *query.derivative_symbols):
        rows = await call(functools.partial(exchange.fetch_open_orders, symbol))
        snap.open_orders += [_order(row) for row in rows]


def _positions(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
    """ccxt's positions as signed base amounts (contracts x contract size), shorts negative."""
    out: dict[str, Decimal] = {}
    for row in rows:
        contracts = _dec(row.get("contracts")) or Decimal(0)
        size = _dec(row.get("contractSize")) or Decimal(1)
        signed = contracts * size * (-1 if row.get("side") == "short" else 1)
        out[row["symbol"]] = out.get(row["symbol"], Decimal(0)) + signed
    return out


def _order(row: dict[str, Any]) -> ExchangeOrder:
    return ExchangeOrder(
        symbol=row.get("symbol") or "",
        client_order_id=row.get("clientOrderId") or "",
        exchange_order_id=str(row.get("id") or ""),
        side=row.get("side") or "",
        amount=_dec(row.get("amount")) or Decimal(0),
        filled=_dec(row.get("filled")) or Decimal(0),
        price=_dec(row.get("price")),
        status=row.get("status") or "",
    )


def _failure(ref: CredentialRef, exc: Exception) -> tuple[str, CredentialFailure]:
    if isinstance(exc, ccxt.AuthenticationError):  # PermissionDenied, AccountSuspended too
        return f"the exchange refused the keys: {_describe(exc)}", CredentialFailure.AUTH
    if isinstance(exc, ccxt.BaseError | ExchangeUnsupported | TimeoutError):
        logger.warning("reading the account of %r failed: %s", ref, _describe(exc))
        return _describe(exc), CredentialFailure.TRANSIENT
    logger.exception("reading the account of %r failed", ref)
    return f"internal: {_describe(exc)}", CredentialFailure.TRANSIENT


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _describe(exc: BaseException) -> str:
    return exchange_error_text(exc, limit=500)
