"""Live orders through ccxt: precision and minimums, idempotent sends, ccxt's error classes.

A send never duplicates an order: the client order id is deterministic, and whenever the
outcome of an earlier send is unknown (a timeout, a 5xx, a 429, a dropped connection, or an
earlier attempt by a worker that died) the order is looked up by that id before it is sent
again. Each ccxt error class maps to one outcome:

* ``OperationFailed`` and its ``NetworkError`` family (``RequestTimeout``,
  ``ExchangeNotAvailable``, ``DDoSProtection``, ``RateLimitExceeded``): unknown → look up,
  back off, resend, a bounded number of times; still unknown → left to the open-order sync;
* ``AuthenticationError`` / ``PermissionDenied`` / ``AccountSuspended``: rejected, and the
  caller pauses the subscription;
* ``InsufficientFunds``, ``InvalidOrder``, ``BadSymbol`` and every other ``ExchangeError``:
  rejected with the exchange's reason, never retried.

Every request of a batch runs under one per-credential guard (``_guarded``): whatever fails on
one credential (refused or undecryptable keys, the network, a bug) becomes that order's result,
marked with its ``CredentialFailure`` for the caller to record on the credential; it never
escapes into the batch, where it would lose every other subscriber's results with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE
from django.conf import settings
from django.utils import timezone

from core.logs import log_context
from core.metrics import EXCHANGE_ERRORS
from markets.exchange_data import exchange_error_text
from subscriptions.crypto import CredentialDecryptionError, decrypt_secret
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.selectors import credential_list_live
from trades.brokers.base import CredentialFailure, OrderRequest, OrderResult, OrderStatus
from trades.brokers.hub import (
    CredentialRef,
    Exchange,
    ExchangeUnsupported,
    Hub,
    Keys,
    fingerprint,
    get_hub,
    hub_run,
)
from trades.ratelimit import bucket_for_exchange

logger = logging.getLogger(__name__)

AUTH_ERRORS = (ccxt.AuthenticationError,)  # PermissionDenied, AccountSuspended are subclasses
UNKNOWN_OUTCOME = (ccxt.OperationFailed,)  # NetworkError and every subclass, and -1001 & co.
SCAN_METHODS = (
    ("fetch_open_orders", "fetchOpenOrders"),
    ("fetch_closed_orders", "fetchClosedOrders"),
    ("fetch_orders", "fetchOrders"),
)
CCXT_STATUS = {
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


def credential_ref(credential: BrokerCredential) -> CredentialRef:
    """Decrypts the keys only when this process's pool does not hold the credential yet.

    Keys that cannot be decrypted make an *unusable* reference rather than an exception: the
    guard answers for its orders, and the other credentials of the batch go on.
    """
    fp = fingerprint(
        credential.api_key_encrypted, credential.secret_encrypted, credential.passphrase_encrypted
    )
    keys, unusable = None, ""
    if not get_hub().is_pooled(credential.pk, fp):
        try:
            keys = _decrypt_keys(credential)
        except CredentialDecryptionError as exc:
            unusable = (
                f"{exc}: the credential was deleted"
                if not credential.secret_encrypted
                else str(exc)
            )
    return CredentialRef(
        id=credential.pk,
        exchange=credential.exchange,
        is_sandbox=credential.is_sandbox,
        fingerprint=fp,
        keys=keys,
        unusable=unusable,
    )


@dataclass(frozen=True)
class PoolWarmup:
    """What ``live_pool_warm`` did in this process."""

    clients: int  # credentials' clients built (keys and markets)
    connections: int  # warm-up requests answered: the HTTP connections opened for batches


def live_pool_warm() -> PoolWarmup:
    """Build this process's clients for the credentials of active live subscriptions (their
    exchange's markets too), as their first orders would, then open the HTTP connections
    their batches will use.

    A worker that just started would otherwise build them all on its first signal (about 4 s
    at 1,000 subscribers), and open a connection per order in flight on it (a TCP and TLS
    handshake each). A credential that cannot be used is left to the fan-out's guard."""
    limit = max(1, settings.EXCHANGE_POOL_MAX_INSTANCES)
    credentials = credential_list_live(statuses=(StrategySubscription.Status.ACTIVE,))[:limit]
    refs = [ref for ref in map(credential_ref, credentials) if ref.keys is not None]

    async def warm(hub: Hub) -> PoolWarmup:
        built = await _build_clients(hub, refs)
        return PoolWarmup(clients=sum(built.values()), connections=await _open_all(hub, built))

    warmup = hub_run(warm)
    get_hub().freeze_pool()
    return warmup


async def _build_clients(hub: Hub, refs: Sequence[CredentialRef]) -> Counter[tuple[str, bool]]:
    """Each credential's client -> the clients built per (exchange, sandbox)."""
    built: Counter[tuple[str, bool]] = Counter()
    for ref in refs:
        try:
            await hub.instance(ref)
            built[(ref.exchange, ref.is_sandbox)] += 1
        except Exception:  # the first order on it will say what is wrong
            logger.warning("could not build the client of credential %s", ref.id)
    return built


async def _open_all(hub: Hub, built: Counter[tuple[str, bool]]) -> int:
    # A batch has at most EXCHANGE_CONCURRENCY orders in flight in this process, one connection
    # each, and never more than the clients it sends through.
    opened = await asyncio.gather(
        *(
            _open_connections(
                hub, exchange_id=exchange_id, sandbox=sandbox, count=min(clients, _concurrency())
            )
            for (exchange_id, sandbox), clients in built.items()
        )
    )
    return sum(opened)


def _concurrency() -> int:
    return max(1, settings.EXCHANGE_CONCURRENCY)


async def _open_connections(hub: Hub, *, exchange_id: str, sandbox: bool, count: int) -> int:
    """Up to ``count`` connections to an exchange, each opened by one unsigned public request
    through its keyless client (on the hub's session, which keeps them open for the orders);
    returns the requests answered."""
    try:
        template = await hub.template(exchange_id, sandbox)
    except Exception:
        logger.warning("could not warm the connections to %s", exchange_id, exc_info=True)
        return 0
    if not template.has.get("fetchTime"):
        logger.info("no connections warmed for %s: no cheap public request", exchange_id)
        return 0
    granted = await _warm_tokens(hub, exchange_id=exchange_id, count=count)
    # All at once: a request finding no idle connection opens one; sent one after the other,
    # they would all go out on the first.
    answered = await asyncio.gather(*(_warm_request(template) for _ in range(granted)))
    if granted < count or False in answered:
        logger.info(
            "%d of %d connections to %s warmed (%d without a rate-limit token)",
            answered.count(True),
            count,
            exchange_id,
            count - granted,
        )
    return answered.count(True)


async def _warm_tokens(hub: Hub, *, exchange_id: str, count: int) -> int:
    """The tokens the exchange's bucket grants now, up to ``count``, in one round trip.

    A warm-up request is a request like any other to the exchange: none goes out without its
    token. It signs with no key, so it takes none of a credential's. The tokens are not waited
    for: tokens taken over time and then spent at once would burst above the rate."""
    bucket = bucket_for_exchange(exchange_id=exchange_id, rate=settings.EXCHANGE_RATE_PER_EXCHANGE)
    try:
        return (await hub.limiter.take_many([[bucket]] * count)).count(True)
    except Exception:  # the limiter's Redis: nothing is sent without a token
        logger.warning("no rate-limit tokens for the warm-up of %s", exchange_id, exc_info=True)
        return 0


async def _warm_request(template: Exchange) -> bool:
    try:
        await template.fetch_time()
    except Exception as exc:
        logger.debug("warm-up request to %s failed: %s", template.id, _describe(exc))
        return False
    return True


def _decrypt_keys(credential: BrokerCredential) -> Keys:
    return Keys(
        api_key=decrypt_secret(credential.api_key_encrypted),
        secret=decrypt_secret(credential.secret_encrypted),
        passphrase=(
            decrypt_secret(credential.passphrase_encrypted)
            if credential.passphrase_encrypted
            else ""
        ),
    )


# --- the per-credential guard ---------------------------------------------------------------
async def _guarded(
    credential: CredentialRef, work: Callable[[], Awaitable[OrderResult]], *, on_exchange: bool
) -> OrderResult:
    """One request of a batch spanning credentials; ``on_exchange``: the order may be there."""
    if credential.unusable:
        return _unusable(credential, on_exchange=on_exchange)
    try:
        return await work()
    except Exception as exc:
        return _failed(credential, exc, on_exchange=on_exchange)


def _unusable(credential: CredentialRef, *, on_exchange: bool) -> OrderResult:
    """No request can be made with these keys. An order that may be on the exchange keeps an
    unknown state; one that was not sent ends rejected: no one can ever send it."""
    if on_exchange:
        return OrderResult(
            status=OrderStatus.UNKNOWN,
            reason=credential.unusable,
            credential_failure=CredentialFailure.DECRYPT,
        )
    return _rejected(f"not sent: {credential.unusable}", failure=CredentialFailure.DECRYPT)


def _failed(
    credential: CredentialRef,
    exc: Exception,
    *,
    on_exchange: bool,
    amount: Decimal | None = None,
) -> OrderResult:
    """An exception of one credential's request as that order's result (called in ``except``)."""
    failure = (
        CredentialFailure.AUTH if isinstance(exc, AUTH_ERRORS) else CredentialFailure.TRANSIENT
    )
    if isinstance(exc, ccxt.BaseError | ExchangeUnsupported):
        reason = _describe(exc)
        logger.warning("request on %r failed: %s", credential, reason)
    else:  # a bug: with its traceback
        reason = f"internal: {_describe(exc)}"
        logger.exception("request on %r failed", credential)
    if on_exchange:
        return OrderResult(
            status=OrderStatus.UNKNOWN, amount=amount, reason=reason, credential_failure=failure
        )
    return _rejected(reason, amount=amount, failure=failure)


# --- sync entry points (called from worker threads) -----------------------------------------
def _batch_timeout(count: int) -> float:
    per_order = settings.EXCHANGE_TIMEOUT_MS / 1000 * (settings.EXCHANGE_ORDER_RETRIES + 2)
    return per_order * 2 + 60 + count * 0.05


def live_place_many(items: Sequence[tuple[CredentialRef, OrderRequest]]) -> list[OrderResult]:
    if not items:
        return []
    hub = get_hub()
    results = hub.run(place_batch(hub, items), _batch_timeout(len(items)))
    hub.freeze_pool()
    return results


def live_lookup_many(items: Sequence[tuple[CredentialRef, OrderRequest]]) -> list[OrderResult]:
    """The exchange's view of these orders (``NOT_FOUND`` / ``UNKNOWN`` when it has none)."""
    if not items:
        return []
    hub = get_hub()
    coros = [_guarded(c, _bind(lookup, hub, c, r), on_exchange=True) for c, r in items]
    return hub.run(_gather(hub, coros), _batch_timeout(len(items)))


def live_cancel_many(
    items: Sequence[tuple[CredentialRef, OrderRequest, str]],
) -> list[OrderResult]:
    if not items:
        return []
    hub = get_hub()
    coros = [
        _guarded(c, _bind(cancel, hub, c, r, order_id), on_exchange=True)
        for c, r, order_id in items
    ]
    return hub.run(_gather(hub, coros), _batch_timeout(len(items)))


def _bind(
    fn: Callable[..., Awaitable[OrderResult]], *args: Any
) -> Callable[[], Awaitable[OrderResult]]:
    """The guard calls the work itself: a coroutine it never awaits would leak a warning."""
    return lambda: fn(*args)


def live_place_oco_many(
    items: Sequence[tuple[CredentialRef, OrderRequest, OrderRequest]],
) -> list[tuple[OrderResult, OrderResult]]:
    """Protective (stop loss, take profit) pairs, each as one one-cancels-the-other list."""
    if not items:
        return []
    hub = get_hub()
    coros = [_oco_guarded(hub, c, stop, take) for c, stop, take in items]
    return hub.run(_gather_pairs(coros), _batch_timeout(len(items)))


async def _oco_guarded(
    hub: Hub, credential: CredentialRef, stop: OrderRequest, take: OrderRequest
) -> tuple[OrderResult, OrderResult]:
    """``_guarded`` for a pair: both legs get the failure."""
    if credential.unusable:
        failed = _unusable(credential, on_exchange=stop.lookup_first)
        return failed, failed
    try:
        return await place_oco(hub, credential, stop, take)
    except Exception as exc:
        failed = _failed(credential, exc, on_exchange=stop.lookup_first)
        return failed, failed


async def _gather_pairs(coros: list[Any]) -> list[tuple[OrderResult, OrderResult]]:
    return list(await asyncio.gather(*coros))


def live_last_price(*, exchange: str, sandbox: bool, symbol: str) -> Decimal | None:
    """The market's last price (for the entry price band); None when it cannot be had."""
    hub = get_hub()
    return hub.run(_last_price(hub, exchange, sandbox, symbol), settings.EXCHANGE_TIMEOUT_MS / 500)


async def _gather(hub: Hub, coros: list[Any]) -> list[OrderResult]:
    return list(await asyncio.gather(*coros))


async def _last_price(hub: Hub, exchange_id: str, sandbox: bool, symbol: str) -> Decimal | None:
    try:
        template = await hub.template(exchange_id, sandbox)
        ticker = await template.fetch_ticker(symbol)
    except (ccxt.BaseError, ExchangeUnsupported):
        return None
    last = ticker.get("last") or ticker.get("close")
    return _dec(last)


# --- a batch of orders -----------------------------------------------------------------------
async def place_batch(
    hub: Hub, items: Sequence[tuple[CredentialRef, OrderRequest]]
) -> list[OrderResult]:
    """Prepare every order, take the rate-limit tokens of all in one Redis call, then send.

    A token per order, each its own Redis round trip, was about a fifth of the client's CPU per
    order in a fan-out. The batch's tokens come from the same shared buckets, all or nothing per
    order; an order whose buckets ran dry (a credential with more orders than its burst) waits
    for its token alone as before. Orders that may already be on the exchange (``lookup_first``)
    take theirs one by one, after the lookup. Only orders about to be sent get a token. A
    token is taken a little before its request goes out (at most the batch's send time, with
    ``EXCHANGE_CONCURRENCY`` orders in flight), never after: the buckets still bound the rate.
    """
    readies = await asyncio.gather(*(_ready_guarded(hub, c, r) for c, r in items))
    sendable = [
        i
        for i, ((_, request), ready) in enumerate(zip(items, readies, strict=True))
        if not isinstance(ready, OrderResult) and not request.lookup_first
    ]
    prepaid = dict.fromkeys(sendable, False)
    try:
        grants = await hub.limiter.take_many([hub.buckets(items[i][0]) for i in sendable])
        prepaid.update(zip(sendable, grants, strict=True))
    except Exception:  # the limiter's Redis: every order asks for its own token, as before
        logger.warning("batch rate-limit take failed; taking tokens per order", exc_info=True)

    async def one(i: int) -> OrderResult:
        ready = readies[i]
        if isinstance(ready, OrderResult):
            return ready
        credential, request = items[i]
        async with hub.semaphore:
            return await _send_guarded(hub, credential, request, ready, prepaid.get(i, False))

    return list(await asyncio.gather(*(one(i) for i in range(len(items)))))


# --- one order ------------------------------------------------------------------------------
Ready = tuple[Exchange, dict[str, Any], tuple[Decimal, Decimal | None, dict]]


async def place(hub: Hub, credential: CredentialRef, request: OrderRequest) -> OrderResult:
    ready = await _ready_guarded(hub, credential, request)
    if isinstance(ready, OrderResult):
        return ready
    async with hub.semaphore:
        return await _send_guarded(hub, credential, request, ready, False)


async def _ready_guarded(
    hub: Hub, credential: CredentialRef, request: OrderRequest
) -> OrderResult | Ready:
    if credential.unusable:
        # Final even after an earlier attempt: no one can ever look it up or send it.
        return _unusable(credential, on_exchange=False)
    async with hub.semaphore:
        try:
            return await _ready(hub, credential, request)
        except Exception as exc:  # nothing was sent by this attempt
            return _failed(credential, exc, on_exchange=request.lookup_first)


async def _send_guarded(
    hub: Hub, credential: CredentialRef, request: OrderRequest, ready: Ready, prepaid: bool
) -> OrderResult:
    exchange, market, (amount, price, params) = ready
    # Each order is a task of its own: the id bound here stays with this order's lines.
    with log_context(client_order_id=request.client_order_id):
        try:
            result = await _send(
                hub, credential, exchange, market, request, amount, price, params, prepaid=prepaid
            )
        except Exception as exc:  # e.g. a lookup refused, or a bug: the order may have been sent
            result = _failed(credential, exc, on_exchange=True, amount=amount)
        logger.debug(
            "order %s %s on %r: %s", request.side, request.symbol, credential, result.status
        )
        return result


async def _ready(hub: Hub, credential: CredentialRef, request: OrderRequest) -> OrderResult | Ready:
    """The instance, the market and the checked order; or why it can't be sent."""
    try:
        exchange = await hub.instance(credential)
        market = exchange.market(request.symbol)
    except ExchangeUnsupported as exc:
        return _not_sent(request, str(exc))
    except ccxt.BadSymbol as exc:
        return _not_sent(request, _describe(exc))
    except UNKNOWN_OUTCOME as exc:
        return _not_sent(request, f"markets unavailable: {_describe(exc)}")
    prepared = _prepare(exchange, market, request)
    if isinstance(prepared, OrderResult):
        return prepared
    if market.get("contract") and not request.reduce_only:
        failure = await _configure(hub, credential, exchange, market, request)
        if failure is not None:
            return failure
    return exchange, market, prepared


def _not_sent(request: OrderRequest, reason: str) -> OrderResult:
    """Rejected, unless an earlier attempt may be out there: then it stays unknown."""
    if request.lookup_first:
        return OrderResult(status=OrderStatus.UNKNOWN, reason=reason)
    return _rejected(reason)


async def _send(
    hub: Hub,
    credential: CredentialRef,
    exchange: Exchange,
    market: dict[str, Any],
    request: OrderRequest,
    amount: Decimal,
    price: Decimal | None,
    params: dict[str, Any],
    *,
    prepaid: bool = False,
) -> OrderResult:
    """``prepaid``: the first attempt's rate-limit token was taken with the batch's."""
    retries = max(0, settings.EXCHANGE_ORDER_RETRIES)
    delay = settings.EXCHANGE_RETRY_BACKOFF_S
    last_error = ""
    sent = request.lookup_first  # whether the exchange may have this order
    for attempt in range(retries + 1):
        if attempt or request.lookup_first:
            found = await _find(hub, credential, exchange, market, request)
            if isinstance(found, OrderResult):
                return found
            if found is not None:  # the lookup itself failed: unknown still
                last_error = found
                await _sleep(delay)
                delay *= 2
                continue
        try:
            if not prepaid:
                await hub.limiter.acquire(*hub.buckets(credential))
        except Exception as exc:  # the limiter's Redis: nothing sent, try again shortly
            last_error = f"rate limiter: {_describe(exc)}"
            await _sleep(delay)
            delay *= 2
            continue
        prepaid = False  # a token pays for one request: a resend takes its own
        sent = True
        try:
            order = await _create_order(credential, exchange, request, amount, price, params)
            return _from_order(order, market, amount=amount)
        except AUTH_ERRORS as exc:
            return _rejected(_describe(exc), amount=amount, failure=CredentialFailure.AUTH)
        except UNKNOWN_OUTCOME as exc:
            last_error = _describe(exc)
            # A 429 / 418 asks for more patience than a dropped connection.
            await _sleep(delay * (4 if isinstance(exc, ccxt.DDoSProtection) else 1))
            delay *= 2
        except ccxt.InvalidOrder as exc:
            if "duplicate" not in str(exc).lower():
                return _rejected(_describe(exc), amount=amount)
            # The exchange has this client order id already: an earlier send went through.
            last_error = _describe(exc)
            request = _with_lookup(request)
        except ccxt.ExchangeError as exc:
            return _rejected(_describe(exc), amount=amount)
    if not sent:
        return _rejected(
            f"not sent: {last_error}", amount=amount, failure=CredentialFailure.TRANSIENT
        )
    return OrderResult(
        status=OrderStatus.UNKNOWN,
        amount=amount,
        reason=f"no definite answer after {retries + 1} attempts: {last_error}",
        credential_failure=CredentialFailure.TRANSIENT,
    )


async def _create_order(
    credential: CredentialRef,
    exchange: Exchange,
    request: OrderRequest,
    amount: Decimal,
    price: Decimal | None,
    params: dict[str, Any],
) -> dict:
    """``create_order``, its ccxt errors counted by class (throttling shows as DDoSProtection
    or RateLimitExceeded, a lost answer as RequestTimeout)."""
    try:
        return await exchange.create_order(
            request.symbol,
            request.type,
            request.side,
            float(amount),
            float(price) if price is not None else None,
            params,
        )
    except ccxt.BaseError as exc:
        EXCHANGE_ERRORS.labels(exchange=credential.exchange, error=type(exc).__name__).inc()
        raise


def _with_lookup(request: OrderRequest) -> OrderRequest:
    from dataclasses import replace

    return replace(request, lookup_first=True)


async def _sleep(delay: float) -> None:
    await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))  # jitter: don't retry in step


async def _find(
    hub: Hub,
    credential: CredentialRef,
    exchange: Exchange,
    market: dict[str, Any],
    request: OrderRequest,
) -> OrderResult | str | None:
    """The order by client order id: a result, None when the exchange has none, or the error."""
    try:
        await hub.limiter.acquire(*hub.buckets(credential))
    except Exception as exc:  # the limiter's Redis: the lookup did not happen
        return f"rate limiter: {_describe(exc)}"
    try:
        order = await _fetch_by_client_id(exchange, request)
        if order is None:
            return None
        result = _from_order(order, market, amount=None)
        if result.quantity > 0 and not _has_fee(order):
            result = await _with_trade_fees(exchange, market, order, result)
        return result
    except UNKNOWN_OUTCOME as exc:
        return _describe(exc)


async def _fetch_by_client_id(exchange: Exchange, request: OrderRequest) -> dict | None:
    cid = request.client_order_id
    try:
        return await exchange.fetch_order(None, request.symbol, {"clientOrderId": cid})
    except ccxt.OrderNotFound:
        return None
    except (ccxt.NotSupported, ccxt.ArgumentsRequired, ccxt.BadRequest):
        pass  # this exchange can't fetch by client id: scan its recent orders instead
    for method, capability in SCAN_METHODS:
        if not exchange.has.get(capability):
            continue
        try:
            orders = await getattr(exchange, method)(request.symbol)
        except (ccxt.NotSupported, ccxt.ArgumentsRequired):
            continue
        for order in orders:
            if order.get("clientOrderId") == cid:
                return order
    return None


async def _with_trade_fees(
    exchange: Exchange, market: dict[str, Any], order: dict, result: OrderResult
) -> OrderResult:
    from dataclasses import replace

    try:
        trades = await exchange.fetch_my_trades(market["symbol"], params={"orderId": order["id"]})
    except ccxt.BaseError:
        return result  # fees stay unknown (0); the fill itself is certain
    mine = [t for t in trades if str(t.get("order")) == str(order["id"])]
    fee = _fees_in_quote(mine, market, result.average_price)
    return replace(result, fee=fee, fee_currency=market["quote"])


async def lookup(hub: Hub, credential: CredentialRef, request: OrderRequest) -> OrderResult:
    """The order's state on the exchange (run under ``_guarded``: failures stay unknown)."""
    async with hub.semaphore:
        exchange = await hub.instance(credential)
        market = exchange.market(request.symbol)
        found = await _find(hub, credential, exchange, market, request)
        if isinstance(found, OrderResult):
            return found
        if found is None:
            return OrderResult(
                status=OrderStatus.NOT_FOUND, reason="the exchange has no such order"
            )
        return OrderResult(
            status=OrderStatus.UNKNOWN, reason=found, credential_failure=CredentialFailure.TRANSIENT
        )


async def cancel(
    hub: Hub, credential: CredentialRef, request: OrderRequest, order_id: str
) -> OrderResult:
    """Cancel, then look the order up (under ``_guarded``: a refused cancel is no answer, the
    order may still rest on the exchange, so it stays unknown rather than taken for final)."""
    async with hub.semaphore:
        exchange = await hub.instance(credential)
        market = exchange.market(request.symbol)
        await hub.limiter.acquire(*hub.buckets(credential))
        # Filled, expired or cancelled meanwhile: the lookup below tells which.
        with contextlib.suppress(ccxt.OrderNotFound, ccxt.OperationRejected):
            await exchange.cancel_order(order_id, request.symbol)
        found = await _find(hub, credential, exchange, market, request)
        if isinstance(found, OrderResult):
            return found
        if found is None:
            return OrderResult(status=OrderStatus.UNKNOWN, reason="order vanished")
        return OrderResult(
            status=OrderStatus.UNKNOWN, reason=found, credential_failure=CredentialFailure.TRANSIENT
        )


# --- protective orders ----------------------------------------------------------------------
def oco_supported(exchange: Exchange, market: dict[str, Any]) -> bool:
    """Binance-style spot OCO lists: both exits rest on one reservation of the position.

    On spot, a stop and a take profit sent as two separate sells would each need the whole
    position (the second is refused), and both could fill: only a one-cancels-the-other list
    is safe there. ccxt has no unified call for it; Binance's endpoint is used directly.
    """
    return (
        not market.get("contract")
        and bool((market.get("info") or {}).get("ocoAllowed"))
        and hasattr(exchange, "private_post_orderlist_oco")
    )


async def place_oco(
    hub: Hub, credential: CredentialRef, stop: OrderRequest, take: OrderRequest
) -> tuple[OrderResult, OrderResult]:
    """Send a stop loss and a take profit as one OCO list; one result per leg (run under
    ``_oco_guarded``)."""
    async with hub.semaphore:
        exchange = await hub.instance(credential)
        market = exchange.market(stop.symbol)
        if not oco_supported(exchange, market):
            skipped = OrderResult(
                status=OrderStatus.SKIPPED,
                reason="the exchange takes no stop orders here: checked at candle close",
            )
            return skipped, skipped
        if stop.lookup_first:  # an earlier attempt may have placed the list
            found = await _find(hub, credential, exchange, market, stop)
            if isinstance(found, OrderResult):
                other = await _find(hub, credential, exchange, market, take)
                if not isinstance(other, OrderResult):
                    other = OrderResult(status=OrderStatus.UNKNOWN, reason=other or "")
                return found, other
            if found is not None:
                unknown = OrderResult(status=OrderStatus.UNKNOWN, reason=found)
                return unknown, unknown
        try:
            return await _send_oco(hub, credential, exchange, market, stop, take)
        except Exception as exc:  # a bug must not lose a list that may have been sent
            logger.exception("sending the OCO %s failed", stop.client_order_id)
            unknown = OrderResult(status=OrderStatus.UNKNOWN, reason=f"internal: {_describe(exc)}")
            return unknown, unknown


async def _send_oco(
    hub: Hub,
    credential: CredentialRef,
    exchange: Exchange,
    market: dict[str, Any],
    stop: OrderRequest,
    take: OrderRequest,
) -> tuple[OrderResult, OrderResult]:
    symbol = market["symbol"]
    amount = _amount_to_precision(exchange, symbol, stop.quantity)
    if amount <= 0:
        skipped = OrderResult(status=OrderStatus.SKIPPED, reason="the amount rounds to 0")
        return skipped, skipped
    assert stop.price is not None and take.price is not None
    legs = {
        "stop": ("STOP_LOSS", stop.price, stop.client_order_id),
        "take": ("TAKE_PROFIT", take.price, take.client_order_id),
    }
    # A sell's take profit is above the market and its stop below; a buy's the other way.
    above, below = ("take", "stop") if stop.side == "sell" else ("stop", "take")
    params: dict[str, Any] = {
        "symbol": market["id"],
        "side": stop.side.upper(),
        "quantity": exchange.amount_to_precision(symbol, float(amount)),
        "listClientOrderId": f"{stop.client_order_id}-l"[:36],
    }
    for prefix, leg in (("above", above), ("below", below)):
        kind, price, cid = legs[leg]
        params[f"{prefix}Type"] = kind
        params[f"{prefix}StopPrice"] = exchange.price_to_precision(symbol, float(price))
        params[f"{prefix}ClientOrderId"] = cid
    await hub.limiter.acquire(*hub.buckets(credential))
    try:
        answer = await exchange.private_post_orderlist_oco(params)
    except AUTH_ERRORS as exc:
        rejected = _rejected(_describe(exc), amount=amount, failure=CredentialFailure.AUTH)
        return rejected, rejected
    except UNKNOWN_OUTCOME as exc:  # the sync looks both legs up by client order id
        unknown = OrderResult(
            status=OrderStatus.UNKNOWN,
            amount=amount,
            reason=_describe(exc),
            credential_failure=CredentialFailure.TRANSIENT,
        )
        return unknown, unknown
    except ccxt.ExchangeError as exc:
        rejected = _rejected(_describe(exc), amount=amount)
        return rejected, rejected
    reports = {
        report.get("clientOrderId"): exchange.parse_order(report, market)
        for report in answer.get("orderReports") or []
    }
    results = []
    for request in (stop, take):
        order = reports.get(request.client_order_id)
        results.append(
            _from_order(order, market, amount=amount)
            if order is not None
            else OrderResult(status=OrderStatus.UNKNOWN, amount=amount, reason="not in the answer")
        )
    return results[0], results[1]


# --- derivatives ----------------------------------------------------------------------------
async def _configure(
    hub: Hub,
    credential: CredentialRef,
    exchange: Exchange,
    market: dict[str, Any],
    request: OrderRequest,
) -> OrderResult | None:
    """Margin mode and leverage before an entry; once per (credential, market, values)."""
    key = (credential.id, market["symbol"], str(request.leverage), request.margin_mode)
    if key in hub.configured:
        return None
    try:
        if request.margin_mode and exchange.has.get("setMarginMode"):
            with contextlib.suppress(ccxt.MarginModeAlreadySet):
                await exchange.set_margin_mode(request.margin_mode, market["symbol"])
        if exchange.has.get("setLeverage"):
            await exchange.set_leverage(int(request.leverage), market["symbol"])
    except AUTH_ERRORS as exc:
        return _rejected(_describe(exc), failure=CredentialFailure.AUTH)
    except ccxt.BaseError as exc:
        return _rejected(f"could not set leverage / margin mode: {_describe(exc)}")
    hub.configured.add(key)
    return None


# --- precision and minimums -----------------------------------------------------------------
def _prepare(
    exchange: Exchange, market: dict[str, Any], request: OrderRequest
) -> tuple[Decimal, Decimal | None, dict[str, Any]] | OrderResult:
    symbol = market["symbol"]
    price = None
    if request.type == "limit" and request.price is not None:
        price = Decimal(exchange.price_to_precision(symbol, float(request.price)))
    reference = price or request.reference_price
    amount = _amount_to_precision(exchange, symbol, request.quantity)
    min_amount = _dec(((market.get("limits") or {}).get("amount") or {}).get("min"))
    min_cost = _dec(((market.get("limits") or {}).get("cost") or {}).get("min"))
    shortfall = _below_minimum(amount, reference, min_amount, min_cost)
    if shortfall:
        if request.bump_max_notional is None:
            return OrderResult(
                status=OrderStatus.SKIPPED,
                amount=amount,
                reason=f"below the market minimum: {shortfall} (policy skip)",
            )
        bumped = _bumped_amount(exchange, market, reference, min_amount, min_cost)
        if bumped is None or bumped * reference > request.bump_max_notional:
            return OrderResult(
                status=OrderStatus.SKIPPED,
                amount=amount,
                reason=f"below the market minimum: {shortfall}; bumping to the minimum "
                f"({bumped}) would exceed capital x leverage ({request.bump_max_notional})",
            )
        amount = bumped
    params: dict[str, Any] = {"clientOrderId": request.client_order_id}
    if request.reduce_only and market.get("contract"):
        params["reduceOnly"] = True
    return amount, price, params


def _amount_to_precision(exchange: Exchange, symbol: str, quantity: Decimal) -> Decimal:
    try:
        return Decimal(exchange.amount_to_precision(symbol, float(quantity)))
    except (ccxt.InvalidOrder, ccxt.ArgumentsRequired, InvalidOperation):
        return Decimal("0")  # rounds to nothing at this market's precision


def _below_minimum(
    amount: Decimal, price: Decimal, min_amount: Decimal | None, min_cost: Decimal | None
) -> str:
    if amount <= 0:
        return "the amount rounds to 0 at the market's precision"
    if min_amount is not None and amount < min_amount:
        return f"amount {amount} < minimum amount {min_amount}"
    if min_cost is not None and amount * price < min_cost:
        return f"notional {amount * price:f} < minimum notional {min_cost}"
    return ""


def _amount_step(exchange: Exchange, market: dict[str, Any]) -> Decimal | None:
    precision = (market.get("precision") or {}).get("amount")
    if precision is None:
        return None
    if exchange.precisionMode == TICK_SIZE:
        return Decimal(str(precision))
    return Decimal(1).scaleb(-int(precision))


def _bumped_amount(
    exchange: Exchange,
    market: dict[str, Any],
    price: Decimal,
    min_amount: Decimal | None,
    min_cost: Decimal | None,
) -> Decimal | None:
    step = _amount_step(exchange, market)
    if step is None or step <= 0:
        return None
    needed = max(min_amount or Decimal(0), (min_cost / price) if min_cost else Decimal(0))
    bumped = (needed / step).to_integral_value(rounding=ROUND_CEILING) * step
    return bumped if bumped > 0 else step


# --- reading ccxt's answers -----------------------------------------------------------------
def _from_order(order: dict, market: dict[str, Any], *, amount: Decimal | None) -> OrderResult:
    filled = _dec(order.get("filled")) or Decimal(0)
    status = CCXT_STATUS.get(order.get("status") or "")
    if status is None:  # open, or not said
        status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
    average = _dec(order.get("average"))
    cost = _dec(order.get("cost"))
    if average is None and cost and filled:
        average = cost / filled
    if average is None and filled:
        average = _dec(order.get("price"))
    fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
    timestamp = order.get("lastTradeTimestamp") or order.get("timestamp")
    now = timezone.now()
    return OrderResult(
        status=status,
        quantity=filled,
        amount=amount if amount is not None else _dec(order.get("amount")),
        average_price=average,
        fee=_fees_in_quote(fees, market, average),
        fee_currency=market["quote"],
        exchange_order_id=str(order.get("id") or ""),
        filled_at=datetime.fromtimestamp(timestamp / 1000, tz=UTC) if timestamp else now,
        acknowledged_at=now,
    )


def _has_fee(order: dict) -> bool:
    return bool(order.get("fee") and order["fee"].get("cost") is not None) or bool(
        order.get("fees")
    )


def _fees_in_quote(items: list[Any], market: dict[str, Any], price: Decimal | None) -> Decimal:
    """Fees converted to the quote currency; a fee in a third currency (e.g. BNB) counts 0."""
    total = Decimal(0)
    for item in items:
        fee = item.get("fee", item) if isinstance(item, dict) else None
        if not fee or fee.get("cost") is None:
            continue
        cost = _dec(fee["cost"]) or Decimal(0)
        if fee.get("currency") == market["quote"]:
            total += cost
        elif fee.get("currency") == market["base"] and price is not None:
            total += cost * price
    return total.quantize(Decimal("0.00000001"))


def _rejected(
    reason: str, *, amount: Decimal | None = None, failure: CredentialFailure | None = None
) -> OrderResult:
    return OrderResult(
        status=OrderStatus.REJECTED,
        amount=amount,
        reason=reason[:2000],
        credential_failure=failure,
    )


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _describe(exc: BaseException) -> str:
    return exchange_error_text(exc)
