"""The exchange hub, the ccxt broker and the order sync, against the simulator (real ccxt)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import ccxt
import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.utils import timezone

from config.celery_app import _warm
from execution.services import execution_run
from subscriptions.models import BrokerCredential
from subscriptions.services import credential_create, subscription_pause
from tests.factories import StrategyFactory, UserFactory
from tests.trades.conftest import STEP
from tests.trades.live import credential_of, live_trader
from tests.trades.test_live_orders import run_close
from trades.brokers.base import OrderRequest, OrderStatus
from trades.brokers.hub import CredentialRef, Hub, get_hub, hub_reset, hub_run
from trades.brokers.live import (
    _configure,
    _prepare,
    credential_ref,
    live_place_many,
    live_pool_warm,
)
from trades.models import Order, Trade
from trades.ratelimit import AsyncRateLimiter, Bucket, bucket_for_exchange
from trades.services import orders_cancel_stale, orders_sync_open

pytestmark = pytest.mark.django_db(transaction=True)


def _request(cid: str, quantity: str = "0.01") -> OrderRequest:
    return OrderRequest(
        symbol="ETH/BTC",
        side="buy",
        quantity=Decimal(quantity),
        client_order_id=cid,
        reference_price=Decimal("0.05"),
        reference_time=timezone.now(),
    )


def test_1000_concurrent_orders_over_100_subscribers_each_signed_with_its_own_key(sim, market):
    # given 100 subscribers' credentials (encrypted at rest) and their exchange accounts
    keys: dict[int, str] = {}
    accounts = []
    credentials = []
    for _ in range(100):
        api_key, secret = f"k-{uuid.uuid4().hex[:16]}", uuid.uuid4().hex
        credential = credential_create(
            user=UserFactory(), exchange="binance", label="x", api_key=api_key, secret=secret
        )
        credentials.append(credential)
        keys[credential.pk] = api_key
        accounts.append({"api_key": api_key, "secret": secret, "balances": {"BTC": "10"}})
    sim.accounts(accounts)

    # when 1,000 orders, ten per subscriber, interleaved, go out at once from one process
    items = []
    expected_key = {}
    for i in range(10):
        for credential in credentials:
            cid = f"t-{credential.pk}-{i}"
            expected_key[cid] = keys[credential.pk]
            items.append((credential_ref(credential), _request(cid)))
    results = live_place_many(items)

    # then every order filled, and the exchange saw each one signed with its owner's key
    assert [r.status for r in results].count(OrderStatus.FILLED) == 1000
    placed = sim.orders()
    assert len(placed) == 1000
    assert all(o["api_key"] == expected_key[o["client_order_id"]] for o in placed)
    assert sim.stats().get("bad_signature", 0) == 0
    # one pooled ccxt instance per credential, all on one shared HTTP session
    hub = get_hub()
    pooled = [hub.instances[c.pk][1] for c in credentials]
    assert len({id(ex) for ex in pooled}) == 100
    assert {ex.apiKey for ex in pooled} == set(keys.values())
    assert len({id(ex.session) for ex in pooled}) == 1


def test_markets_are_loaded_once_and_shared_through_redis(sim, market):
    # given two fresh hubs, as in two worker processes
    first, second = Hub(), Hub()
    try:
        # when both need the exchange's markets
        markets = first.run(first.template("binance", False)).markets
        again = second.run(second.template("binance", False)).markets

        # then the exchange was asked once; the second hub read Redis
        assert sim.stats()["exchangeInfo"] == 1
        assert set(markets) == set(again) and "ETH/BTC" in again
    finally:
        first.stop()
        second.stop()


def test_keys_are_decrypted_only_for_credentials_not_yet_pooled(sim, market):
    # given a credential whose instance is pooled after a first order
    trader = live_trader(sim, StrategyFactory())
    credential = trader.subscription.credential
    first = credential_ref(credential)
    assert first.keys is not None and "secret" not in repr(first.keys)
    live_place_many([(first, _request("pool-1"))])

    # when the next fan-out needs it
    again = credential_ref(credential)

    # then nothing is decrypted: the pool has the instance
    assert again.keys is None
    assert live_place_many([(again, _request("pool-2"))])[0].status == OrderStatus.FILLED


def test_sandbox_credential_on_an_exchange_without_sandbox_is_a_clear_rejection():
    # given a sandbox credential for an exchange that ccxt has no testnet for
    without = "bitstamp"
    assert not getattr(ccxt, without)().urls.get("test")
    ref = CredentialRef(id=10**9, exchange=without, is_sandbox=True, fingerprint="x")

    # when an order is placed through it
    result = live_place_many([(ref, _request("sbx"))])[0]

    # then it is rejected, saying why, without touching any network
    assert result.status == OrderStatus.REJECTED and "no sandbox" in result.reason


def test_unknown_exchange_id_is_a_clear_rejection():
    ref = CredentialRef(
        id=10**9 + 1, exchange="no-such-exchange", is_sandbox=False, fingerprint="x"
    )
    result = live_place_many([(ref, _request("unk"))])[0]
    assert (
        result.status == OrderStatus.REJECTED and "not an exchange ccxt supports" in result.reason
    )


def test_rate_limit_is_shared_by_separate_clients():
    # given two limiters with their own Redis connections and event loops (as two processes)
    bucket = Bucket(f"ratelimit:test:{uuid.uuid4().hex}", rate=20.0, burst=1.0)
    stamps: list[float] = []

    def take(count: int) -> None:
        async def go() -> None:
            client = aioredis.Redis.from_url(django_settings.REDIS_APP_URL)
            limiter = AsyncRateLimiter(client)
            for _ in range(count):
                await limiter.acquire(bucket)
                stamps.append(time.monotonic())
            await client.aclose()

        asyncio.run(go())

    # when both take 10 tokens at once
    threads = [threading.Thread(target=take, args=(10,)) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then together they kept to 20 per second: 20 tokens, 1 of them burst, need >= 0.95 s
    assert len(stamps) == 20
    assert max(stamps) - started >= 0.9


def test_batch_take_grants_orders_from_the_shared_buckets_and_leaves_the_rest_waiting():
    # given a credential bucket of burst 2, another credential's, and an exchange bucket of 3
    tag = uuid.uuid4().hex
    first = Bucket(f"ratelimit:test:{tag}:a", rate=2.0, burst=2.0)
    second = Bucket(f"ratelimit:test:{tag}:b", rate=2.0, burst=2.0)
    exchange = Bucket(f"ratelimit:test:{tag}:x", rate=1000.0, burst=3.0)

    async def go() -> tuple[list[bool], list[bool], float]:
        client = aioredis.Redis.from_url(django_settings.REDIS_APP_URL)
        other = aioredis.Redis.from_url(django_settings.REDIS_APP_URL)  # another process's
        try:
            # when one batch asks for four orders on the first and two on the second
            takes = [(first, exchange)] * 4 + [(second, exchange)] * 2
            granted = await AsyncRateLimiter(client).take_many(takes)
            # and another client asks the emptied first credential for a token
            again = await AsyncRateLimiter(other).take_many([(first,)])
            waited = await AsyncRateLimiter(other).acquire(first)
            return granted, again, waited
        finally:
            await client.aclose()
            await other.aclose()

    granted, again, waited = asyncio.run(go())

    # then each order was granted while all its buckets held a token, in order, all or nothing
    assert granted == [True, True, False, False, True, False]
    # and the tokens taken by the batch are gone for every other client too: it has to wait
    assert again == [False]
    assert waited >= 0.4


def test_a_batch_with_more_orders_than_a_credential_burst_keeps_to_its_rate(sim, market, settings):
    # given a credential allowed 2 requests per second (burst 2)
    settings.EXCHANGE_RATE_PER_CREDENTIAL = 2.0
    trader = live_trader(sim, StrategyFactory())
    ref = credential_ref(trader.subscription.credential)

    # when one batch sends 5 of its orders
    started = time.monotonic()
    results = live_place_many([(ref, _request(f"burst-{i}")) for i in range(5)])
    elapsed = time.monotonic() - started

    # then all filled, signed with its key, but the 3 beyond the burst waited for their tokens
    assert [r.status for r in results] == [OrderStatus.FILLED] * 5
    assert [o["api_key"] for o in sim.orders()] == [trader.api_key] * 5
    assert elapsed >= 1.3


def test_unknown_outcome_is_reconciled_by_the_order_sync(sim, market):
    # given an order the exchange accepted while every answer about it was lost
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy)
    sim.faults(next={"timeout_after_accept": 1}, fail_rate=1.0, hold_s=3)
    entry = run_close(sim, strategy, market[10])
    trade = Trade.objects.get(execution=entry)
    order = Order.objects.get(trade=trade)
    assert (trade.status, order.status) == ("pending", "unknown")
    assert "no definite answer" in order.error

    # when the exchange answers again and the periodic sync runs
    sim.faults(fail_rate=0.0)
    assert orders_sync_open() == 1

    # then the one order the exchange has is recorded, and nothing was sent twice
    trade.refresh_from_db()
    order.refresh_from_db()
    assert (trade.status, order.status) == ("open", "filled")
    assert len(sim.orders()) == 1 and sim.orders()[0]["api_key"] == trader.api_key


@pytest.mark.parametrize("fresh", [True, False])
def test_an_order_that_never_reached_the_exchange_is_resent_only_while_fresh(
    sim, market, settings, fresh
):
    # given an entry whose every send failed before the exchange accepted it
    strategy = StrategyFactory(settings={"signal": "LONG"})
    live_trader(sim, strategy)
    sim.faults(fail_rate=1.0)
    entry = run_close(sim, strategy, market[10])
    order = Order.objects.get(execution=entry)
    assert order.status == "unknown" and sim.orders() == []

    # when the exchange recovers and the sync runs, with the signal fresh or too old
    sim.faults(fail_rate=0.0)
    if not fresh:
        settings.SIGNAL_MAX_AGE_S = -1
    orders_sync_open()

    # then a fresh entry is sent now (once); a stale one is rejected with the reason
    order.refresh_from_db()
    trade = Trade.objects.get(execution=entry)
    if fresh:
        assert (order.status, trade.status, order.attempts) == ("filled", "open", 2)
        assert len(sim.orders()) == 1
    else:
        assert (order.status, trade.status) == ("rejected", "rejected")
        assert "never reached the exchange" in trade.error and sim.orders() == []


def test_stale_limit_entry_is_cancelled(sim, market, settings):
    # given a limit entry at the signal's price while the market trades just above it
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy, entry_order_type="limit")
    sim.clock(market[11])
    outcome = execution_run(
        strategy_id=strategy.pk,
        interval_start=market[10] - STEP,
        trigger="replay",
        inline_fanout=True,
    )
    trade = Trade.objects.get(execution_id=outcome.execution_id)
    order = Order.objects.get(trade=trade)
    assert (order.type, order.status, trade.status) == ("limit", "open", "pending")
    assert orders_sync_open() == 1  # still open on the exchange: nothing changes
    order.refresh_from_db()
    assert order.status == "open"

    # when it has been open longer than the entry timeout
    settings.ENTRY_ORDER_TIMEOUT_S = 0
    assert orders_cancel_stale() == 1

    # then it is cancelled on the exchange and the trade says so
    order.refresh_from_db()
    trade.refresh_from_db()
    assert order.status == "cancelled" and trade.status == "cancelled"
    assert [o["status"] for o in sim.orders()] == ["CANCELED"]
    trader.subscription.refresh_from_db()
    assert trader.subscription.status == "active"


# --- derivatives, with a stand-in exchange (the simulator is spot only) ---------------------
@dataclass
class FakeFutures:
    """Just what the broker asks a derivatives exchange before and while sending."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    has: dict[str, bool] = field(
        default_factory=lambda: {"setLeverage": True, "setMarginMode": True}
    )
    precisionMode: int = 4

    async def set_margin_mode(self, mode: str, symbol: str) -> None:
        self.calls.append(("margin_mode", (mode, symbol)))

    async def set_leverage(self, leverage: int, symbol: str) -> None:
        self.calls.append(("leverage", (leverage, symbol)))

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return f"{int(amount)}"

    def price_to_precision(self, symbol: str, price: float) -> str:
        return f"{price:.4f}"


FUTURES_MARKET = {
    "symbol": "XRP/USDT:USDT",
    "contract": True,
    "base": "XRP",
    "quote": "USDT",
    "precision": {"amount": 1},
    "limits": {"amount": {"min": 1}, "cost": {"min": 5}},
}


def test_leverage_and_margin_mode_are_set_once_before_entries():
    # given a derivatives market and a 3x isolated subscriber
    exchange = FakeFutures()
    hub = type("HubStub", (), {"configured": set()})()
    ref = CredentialRef(id=1, exchange="binanceusdm", is_sandbox=False, fingerprint="f")
    request = OrderRequest(
        symbol="XRP/USDT:USDT",
        side="buy",
        quantity=Decimal("100"),
        client_order_id="c1",
        reference_price=Decimal("1"),
        reference_time=timezone.now(),
        leverage=Decimal("3"),
        margin_mode="isolated",
    )

    # when two entries go out
    for _ in range(2):
        assert asyncio.run(_configure(hub, ref, exchange, FUTURES_MARKET, request)) is None

    # then margin mode and leverage were set once, before them
    assert exchange.calls == [
        ("margin_mode", ("isolated", "XRP/USDT:USDT")),
        ("leverage", (3, "XRP/USDT:USDT")),
    ]


def test_exits_are_reduce_only_on_derivatives_markets():
    exchange = FakeFutures()
    exit_request = OrderRequest(
        symbol="XRP/USDT:USDT",
        side="sell",
        quantity=Decimal("100"),
        client_order_id="x1",
        reference_price=Decimal("1"),
        reference_time=timezone.now() - timedelta(seconds=1),
        reduce_only=True,
    )
    _, _, params = _prepare(exchange, FUTURES_MARKET, exit_request)  # type: ignore[misc]
    assert params == {"clientOrderId": "x1", "reduceOnly": True}
    spot = {**FUTURES_MARKET, "contract": False}
    _, _, spot_params = _prepare(exchange, spot, exit_request)  # type: ignore[misc]
    assert spot_params == {"clientOrderId": "x1"}  # spot has no reduce-only


@pytest.mark.parametrize("body", [b"", b"[1]", b'{"now_ms": "soon"}', b'{"now_ms": -5}'])
def test_the_simulator_clock_refuses_a_malformed_body_with_a_400(sim, body):
    # given the simulator's admin API
    # when its clock is set with a body that names no time
    response = sim.http.post(
        f"{sim.url}/sim/clock", data=body, headers={"Content-Type": "application/json"}
    )

    # then it answers a 400 that says what it expects, and the clock is still usable
    assert response.status_code == 400 and "now_ms" in response.json()["error"]
    sim.clock(None)


def test_a_starting_worker_builds_the_clients_of_its_active_live_subscriptions(sim, market):
    # given an active live subscriber and a paused one, on the simulator
    strategy = StrategyFactory(settings={"signal": "LONG"})
    active = live_trader(sim, strategy).subscription.credential
    paused = live_trader(sim, StrategyFactory()).subscription
    subscription_pause(subscription=paused)

    # when the process warms its exchange pool, as each worker process does when it starts
    warmup = live_pool_warm()

    # then the active subscriber's client is built (keys and markets), the paused one's is not
    assert warmup.clients == 1
    hub = get_hub()
    assert hub.is_pooled(active.pk, credential_ref(active).fingerprint)
    assert not hub.is_pooled(paused.credential.pk, credential_ref(paused.credential).fingerprint)
    assert hub_run(lambda h: h.instance(credential_ref(active))).markets


@pytest.fixture
def fresh_hub():
    """This process's hub as a worker process that just started has it: no session yet, no
    connection open, nothing pooled."""
    hub_reset()
    yield
    hub_reset()


def test_a_starting_worker_opens_the_connections_its_batches_use(sim, market, settings, fresh_hub):
    # given three active live subscribers, and at most two orders in flight per process
    settings.EXCHANGE_CONCURRENCY = 2
    strategy = StrategyFactory(settings={"signal": "LONG"})
    traders = [live_trader(sim, strategy) for _ in range(3)]

    # when the process warms its exchange pool
    warmup = live_pool_warm()

    # then it built the three clients and opened two connections, one unsigned request each
    assert (warmup.clients, warmup.connections) == (3, 2)
    stats = sim.stats()
    assert stats["time"] == 2 and stats["connections"] == 2
    assert sim.request_rates()["requests"] == 0  # nothing signed: no key was used
    # and the next batch's orders go out on those connections: none is opened for them
    refs = [credential_ref(credential_of(t)) for t in traders]
    results = live_place_many([(r, _request(f"warm-{r.id}")) for r in refs])
    assert [r.status for r in results] == [OrderStatus.FILLED] * 3
    assert sim.stats()["connections"] == 2


def test_warmed_connections_idle_longer_than_the_keepalive_are_opened_again(
    sim, market, settings, fresh_hub
):
    # given a process that keeps idle connections 0.2 s, warmed for one active subscriber
    settings.EXCHANGE_KEEPALIVE_S = 0.2
    trader = live_trader(sim, StrategyFactory(settings={"signal": "LONG"}))
    assert live_pool_warm().connections == 1
    opened = sim.stats()["connections"]

    # when its order comes later than that
    time.sleep(0.5)
    [result] = live_place_many([(credential_ref(credential_of(trader)), _request("late-1"))])

    # then it went out on a connection of its own: the warmed one had been closed
    assert result.status == OrderStatus.FILLED
    assert sim.stats()["connections"] == opened + 1


def test_the_warm_up_takes_the_exchanges_rate_limit_tokens_and_never_exceeds_them(
    sim, market, settings, fresh_hub
):
    # given three active live subscribers, and an exchange's bucket that holds two tokens now
    settings.EXCHANGE_RATE_PER_EXCHANGE = 2.0
    strategy = StrategyFactory(settings={"signal": "LONG"})
    for _ in range(3):
        live_trader(sim, strategy)

    # when the process warms its exchange pool
    warmup = live_pool_warm()

    # then two requests went out, each with its token (the bucket is empty), the third did not
    assert (warmup.clients, warmup.connections) == (3, 2)
    assert sim.stats()["time"] == 2
    bucket = bucket_for_exchange(exchange_id="binance", rate=2.0)
    tokens = redis.Redis.from_url(django_settings.REDIS_APP_URL).hget(bucket.key, "tokens")
    assert tokens is not None and float(tokens) < 1


def test_a_credential_that_cannot_be_used_does_not_stop_the_warm_up(
    sim, market, settings, fresh_hub
):
    # given three active live subscribers: one's keys cannot be decrypted, one is marked as a
    # sandbox credential on an exchange without a sandbox here, one is fine
    strategy = StrategyFactory(settings={"signal": "LONG"})
    undecryptable, unsupported, usable = (live_trader(sim, strategy) for _ in range(3))
    foreign = Fernet(Fernet.generate_key()).encrypt(b"secret").decode()
    BrokerCredential.objects.filter(pk=credential_of(undecryptable).pk).update(
        secret_encrypted=foreign
    )
    BrokerCredential.objects.filter(pk=credential_of(unsupported).pk).update(
        exchange="kraken", is_sandbox=True
    )

    # when the process warms its exchange pool
    warmup = live_pool_warm()

    # then the usable one's client is built and its exchange's connection opened
    assert (warmup.clients, warmup.connections) == (1, 1)
    assert get_hub().is_pooled(
        credential_of(usable).pk, credential_ref(credential_of(usable)).fingerprint
    )


def test_a_starting_worker_process_logs_what_its_pool_warm_up_did(sim, market, fresh_hub, caplog):
    # given an active live subscriber
    live_trader(sim, StrategyFactory(settings={"signal": "LONG"}))

    # when a pool process's warm-up thread runs, as worker_process_init starts it
    with caplog.at_level(logging.INFO, logger="config.celery_app"):
        _warm()

    # then its line says how long it took, the clients built and the connections opened
    [line] = [r.getMessage() for r in caplog.records if r.name == "config.celery_app"]
    assert re.fullmatch(r"exchange pool warmed in \d+\.\d\d s: 1 clients, 1 connections", line)
