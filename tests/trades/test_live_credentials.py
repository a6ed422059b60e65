"""One subscriber's credential failing stays that subscriber's: every loop over many tenants
(the fan-out, the order sync, the stale cancel) goes on for everyone else, through real ccxt
against the exchange simulator."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from core.events import EventType, event_subscribe
from core.time_utils import datetime_to_ms
from execution.services import execution_run
from subscriptions.models import BrokerCredential, StrategySubscription
from tests.factories import StrategyFactory, load_candles
from tests.trades.conftest import START, STEP
from tests.trades.live import Sim, Trader, live_trader
from tests.trades.test_live_orders import STOPS, _market_that_moves, run_close
from trades.models import Order, Trade
from trades.purposes import OrderPurpose
from trades.services import orders_cancel_stale, orders_sync_open

pytestmark = pytest.mark.django_db(transaction=True)


def _market_that_dips() -> list[datetime]:
    """Flat at 0.05 up to the entry, just above it for one candle, then through it."""
    prices = [0.05] * 10 + [0.0502, 0.049]
    rows = [
        [datetime_to_ms(START + STEP * i), p, p * 1.001, p * 0.999, p, 10.0]
        for i, p in enumerate(prices)
    ]
    load_candles(rows=rows)
    return [START + STEP * (i + 1) for i in range(len(prices))]


def _resting_limit_entries(sim: Sim, count: int = 3) -> tuple[list[datetime], list[Trader]]:
    """``count`` subscribers whose limit entries at the signal's price rest on the exchange."""
    closes = _market_that_dips()
    sim.refresh()
    strategy = StrategyFactory(settings={"signal": "LONG"})
    traders = [live_trader(sim, strategy, entry_order_type="limit") for _ in range(count)]
    sim.clock(closes[10])  # the market trades just above the signal's price
    execution_run(
        strategy_id=strategy.pk,
        interval_start=closes[9] - STEP,
        trigger="replay",
        inline_fanout=True,
    )
    orders = Order.objects.filter(subscription__strategy=strategy, purpose=OrderPurpose.entry())
    assert sorted(o.status for o in orders) == ["open"] * count
    return closes, traders


def _revoke(sim: Sim, trader: Trader) -> None:
    """The exchange stops honouring the key: every signed request of it is refused."""
    sim.account(trader.api_key, f"revoked-{trader.secret}", {})


def _make_undecryptable(trader: Trader) -> None:
    """Ciphertext made with a key this deployment does not have (e.g. dropped too early)."""
    foreign = Fernet(Fernet.generate_key()).encrypt(b"secret").decode()
    BrokerCredential.objects.filter(pk=trader.subscription.credential_id).update(
        secret_encrypted=foreign
    )


def _entry_order(trader: Trader) -> Order:
    return Order.objects.select_related("trade").get(
        subscription=trader.subscription, purpose=OrderPurpose.entry()
    )


def _assert_paused_for(trader: Trader, words: str) -> None:
    trader.subscription.refresh_from_db()
    assert trader.subscription.status == StrategySubscription.Status.PAUSED
    assert words in trader.subscription.status_reason
    credential = BrokerCredential.objects.get(pk=trader.subscription.credential_id)
    assert words in credential.last_error and credential.last_error_at is not None


def test_a_revoked_key_does_not_stop_the_sync_of_everyone_elses_fills(sim):
    # given three limit entries resting on the exchange, and the first subscriber's key revoked
    closes, traders = _resting_limit_entries(sim)
    revoked, others = traders[0], traders[1:]
    _revoke(sim, revoked)
    paused: list[dict] = []
    unsubscribe = event_subscribe(
        event_type=EventType.SUBSCRIPTION_PAUSED, handler=lambda e: paused.append(e.payload)
    )

    # when the market comes down through the limits and the order sync runs
    sim.clock(closes[11])
    try:
        orders_sync_open()
    finally:
        unsubscribe()

    # then the other subscribers' fills are recorded and their trades open
    for trader in others:
        order = _entry_order(trader)
        assert (order.status, order.trade.status) == ("filled", "open")
    # and the revoked one's order keeps what is known of it, its subscription paused with the
    # reason (and the event), the error recorded on its credential
    order = _entry_order(revoked)
    assert (order.status, order.trade.status) == ("open", "pending")
    _assert_paused_for(revoked, "AuthenticationError")
    assert [p["subscription_id"] for p in paused] == [revoked.subscription.pk]
    for trader in others:
        trader.subscription.refresh_from_db()
        assert trader.subscription.status == StrategySubscription.Status.ACTIVE


def test_a_revoked_key_does_not_stop_the_sync_of_everyone_elses_stop_legs(sim):
    # given three open live longs with their stop and target resting on the exchange
    closes = _market_that_moves(0.049)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    traders = [live_trader(sim, strategy) for _ in range(3)]
    entry = run_close(sim, strategy, closes[9])
    assert Order.objects.filter(purpose__startswith="stop:", status="open").count() == 3
    revoked, others = traders[0], traders[1:]
    _revoke(sim, revoked)

    # when the market falls through the stops on the exchange and the order sync runs
    sim.clock(closes[11])
    orders_sync_open()

    # then the other subscribers' trades are closed by their stop losses
    for trader in others:
        trade = Trade.objects.get(execution=entry, subscription=trader.subscription)
        assert trade.status == "closed" and trade.metadata["exit_reason"] == "stop loss"
    # and the revoked one's trade stays open (its stop's fill is not known here), paused
    trade = Trade.objects.get(execution=entry, subscription=revoked.subscription)
    assert trade.status == "open"
    _assert_paused_for(revoked, "AuthenticationError")


def test_a_revoked_key_does_not_stop_the_stale_cancel_of_everyone_else(sim, settings):
    # given three limit entries resting past the entry timeout, the first one's key revoked
    _, traders = _resting_limit_entries(sim)
    revoked, others = traders[0], traders[1:]
    _revoke(sim, revoked)
    settings.ENTRY_ORDER_TIMEOUT_S = 0

    # when the stale cancel runs
    assert orders_cancel_stale() == 2

    # then the others' entries are cancelled on the exchange and here
    for trader in others:
        order = _entry_order(trader)
        assert (order.status, order.trade.status) == ("cancelled", "cancelled")
    # and the revoked one's entry is not taken for refused or cancelled: it may still rest
    # on the exchange; its subscription is paused with the reason
    order = _entry_order(revoked)
    assert (order.status, order.trade.status) == ("open", "pending")
    _assert_paused_for(revoked, "AuthenticationError")


def test_a_credential_that_cannot_be_decrypted_fails_only_its_own_order_in_a_fanout(sim, market):
    # given three live subscribers in one fan-out batch, the first one's keys undecryptable
    strategy = StrategyFactory(settings={"signal": "LONG"})
    traders = [live_trader(sim, strategy) for _ in range(3)]
    broken, others = traders[0], traders[1:]
    _make_undecryptable(broken)

    # when a candle closes with a LONG signal
    entry = run_close(sim, strategy, market[10])

    # then the others bought on their accounts
    for trader in others:
        order = _entry_order(trader)
        assert (order.status, order.trade.status) == ("filled", "open")
    assert {o["api_key"] for o in sim.orders()} == {t.api_key for t in others}
    # and the broken one's order reached a final state with the reason, nothing sent for it
    order = _entry_order(broken)
    assert (order.status, order.trade.status) == ("rejected", "rejected")
    assert "cannot be decrypted" in order.error and "cannot be decrypted" in order.trade.error
    assert entry.status == "success"
    _assert_paused_for(broken, "cannot be decrypted")


def test_a_pending_order_whose_credential_cannot_be_decrypted_ends_rejected_in_the_sync(
    sim, market
):
    # given two entries whose sends never got through, one of them left claimed by a worker
    # that died, on a credential that can no longer be decrypted
    strategy = StrategyFactory(settings={"signal": "LONG"})
    broken, other = live_trader(sim, strategy), live_trader(sim, strategy)
    sim.faults(fail_rate=1.0)
    run_close(sim, strategy, market[10])
    sim.faults(fail_rate=0.0)
    long_ago = timezone.now() - timedelta(hours=1)
    Order.objects.filter(subscription=broken.subscription).update(
        status=Order.Status.PENDING, send_token="died", sent_at=long_ago
    )
    _make_undecryptable(broken)

    # when the order sync runs
    orders_sync_open()

    # then the other entry is resent and filled
    order = _entry_order(other)
    assert (order.status, order.trade.status) == ("filled", "open")
    # and the orphaned one ends rejected with the reason, not pending forever
    order = _entry_order(broken)
    assert (order.status, order.trade.status) == ("rejected", "rejected")
    assert "cannot be decrypted" in order.error
    _assert_paused_for(broken, "cannot be decrypted")
