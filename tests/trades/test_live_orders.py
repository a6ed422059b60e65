"""Live orders through the unmodified ccxt client against the exchange simulator, in process.

The fan-out runs inline here (``execution_run(..., inline_fanout=True)``); the worker-process
paths are in test_live_workers.py.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest
from django.conf import settings as django_settings

from core.events import EventType, event_subscribe
from core.time_utils import datetime_to_ms
from execution.services import execution_run
from notifications.models import Notification
from strategies.models import StrategyExecution
from strategies.services import strategy_update_settings
from subscriptions.models import StrategySubscription
from tests.factories import StrategyFactory, load_candles
from tests.trades.conftest import START, STEP
from tests.trades.live import Sim, live_trader
from trades.models import Order, Position, Trade
from trades.services import orders_sync_open

pytestmark = pytest.mark.django_db(transaction=True)

STOPS = """
LOOKBACK = 5

def generate_signal(candles, settings):
    kind = settings.get("signal", "HOLD")
    if kind == "HOLD":
        return None
    price = float(candles["close"].iloc[-1])
    return {"signal": kind, "price": price,
            "stopLoss": price * (1 - settings["sl"]), "takeProfit": price * (1 + settings["tp"])}
"""


def run_close(sim: Sim, strategy, close: datetime) -> StrategyExecution:
    """One candle close: the simulator's clock at the close, the execution in process."""
    sim.clock(close)
    outcome = execution_run(
        strategy_id=strategy.pk, interval_start=close - STEP, trigger="replay", inline_fanout=True
    )
    return StrategyExecution.objects.get(pk=outcome.execution_id)


def sim_orders_by_client_id(sim: Sim) -> dict[str, dict]:
    return {o["client_order_id"]: o for o in sim.orders()}


def test_entry_and_exit_through_ccxt(sim, market):
    # given three live subscribers with different capital
    strategy = StrategyFactory(settings={"signal": "LONG"})
    traders = [live_trader(sim, strategy, capital=c) for c in ("1", "2", "5")]

    # when a candle closes with a LONG signal
    entry = run_close(sim, strategy, market[10])

    # then each subscriber bought on its own account, sized by its own capital, at the close
    assert entry.status == "success"
    on_exchange = sim_orders_by_client_id(sim)
    assert len(on_exchange) == 3
    for trader in traders:
        trade = Trade.objects.get(execution=entry, subscription=trader.subscription)
        order = Order.objects.get(trade=trade, purpose="entry")
        placed = on_exchange[trade.client_order_id]
        assert trade.status == "open" and order.status == "filled" and order.attempts == 1
        assert placed["api_key"] == trader.api_key and placed["status"] == "FILLED"
        notional = trader.subscription.capital * Decimal("0.01")
        expected_quantity = (notional / entry.close_price).quantize(Decimal("0.001"), "ROUND_DOWN")
        assert trade.quantity == expected_quantity
        assert trade.entry_price == entry.close_price
        assert trade.entry_fee == Decimal(placed["fee"]) > 0  # the exchange's own fee
        position = Position.objects.get(subscription=trader.subscription)
        assert (position.side, position.quantity) == ("long", trade.quantity)

    # when a later candle closes with EXIT_LONG
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    exit_execution = run_close(sim, strategy, market[15])

    # then every position is sold on its own account and closed with its PnL net of fees
    on_exchange = sim_orders_by_client_id(sim)
    assert len(on_exchange) == 6
    for trader in traders:
        trade = Trade.objects.get(execution=entry, subscription=trader.subscription)
        assert trade.status == "closed" and trade.exit_execution_id == exit_execution.pk
        sold = on_exchange[trade.exit_client_order_id]
        assert sold["api_key"] == trader.api_key and sold["side"] == "SELL"
        assert Decimal(sold["quantity"]) == trade.quantity
        assert trade.exit_price == exit_execution.close_price
        expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
        assert trade.pnl == expected.quantize(Decimal("1e-8"))
        assert trade.pnl > 0
        trader.subscription.refresh_from_db()
        assert trader.subscription.realized_pnl == trade.pnl
        position = Position.objects.get(subscription=trader.subscription)
        assert (position.side, position.quantity, position.realized_pnl) == ("flat", 0, trade.pnl)


def test_timeout_after_accept_places_exactly_one_order(sim, market):
    # given an exchange that accepts the next order but holds its answer past the timeout
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy)
    sim.faults(next={"timeout_after_accept": 1}, hold_s=4)

    # when the entry fans out
    entry = run_close(sim, strategy, market[10])

    # then the order was looked up by its client order id, not sent twice, and the trade filled
    orders = sim.orders()
    assert len(orders) == 1 and orders[0]["api_key"] == trader.api_key
    stats = sim.stats()
    assert stats["fault_timeout_after_accept"] == 1 and stats["order_create"] == 1
    assert stats["order_query"] >= 1
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open" and trade.quantity == Decimal(orders[0]["executed"])
    assert Order.objects.get(trade=trade).status == "filled"


def test_rate_limited_order_backs_off_then_succeeds(sim, market):
    # given an exchange answering 429 to the next two requests
    strategy = StrategyFactory(settings={"signal": "LONG"})
    live_trader(sim, strategy)
    sim.faults(next={"rate_limit": 2})

    # when the entry fans out
    entry = run_close(sim, strategy, market[10])

    # then after backing off the order went through, once
    assert sim.stats()["fault_rate_limit"] == 2
    assert len(sim.orders()) == 1
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open" and trade.error == ""


def test_insufficient_funds_rejects_only_that_subscriber(sim, market):
    # given three subscribers, one without the funds for its order
    strategy = StrategyFactory(settings={"signal": "LONG"})
    rich = [live_trader(sim, strategy) for _ in range(2)]
    poor = live_trader(sim, strategy, balances={"BTC": "0.0001"})

    # when the entry fans out
    entry = run_close(sim, strategy, market[10])

    # then the poor one is rejected with the exchange's reason, the others filled
    rejected = Trade.objects.get(execution=entry, subscription=poor.subscription)
    assert rejected.status == "rejected" and "InsufficientFunds" in rejected.error
    assert Order.objects.get(trade=rejected).status == "rejected"
    for trader in rich:
        assert Trade.objects.get(execution=entry, subscription=trader.subscription).status == "open"
    poor.subscription.refresh_from_db()
    assert poor.subscription.status == "active"  # not an auth problem: nothing paused


@pytest.mark.parametrize("problem", ["wrong secret", "unknown key"])
def test_bad_keys_reject_and_pause_the_subscription(sim, market, problem):
    # given a subscriber whose keys the exchange does not accept
    strategy = StrategyFactory(settings={"signal": "LONG"})
    good = live_trader(sim, strategy)
    bad = live_trader(sim, strategy, register=problem == "wrong secret")
    if problem == "wrong secret":
        sim.account(bad.api_key, "not-the-secret-we-hold", {"BTC": "10"})
    paused: list[dict] = []
    unsubscribe = event_subscribe(
        event_type=EventType.SUBSCRIPTION_PAUSED, handler=lambda e: paused.append(e.payload)
    )

    # when the entry fans out
    try:
        entry = run_close(sim, strategy, market[10])
    finally:
        unsubscribe()

    # then its trade is rejected, its subscription paused with the reason, and an event emitted
    trade = Trade.objects.get(execution=entry, subscription=bad.subscription)
    assert trade.status == "rejected" and "AuthenticationError" in trade.error
    bad.subscription.refresh_from_db()
    assert bad.subscription.status == StrategySubscription.Status.PAUSED
    assert "AuthenticationError" in bad.subscription.status_reason
    assert [p["subscription_id"] for p in paused] == [bad.subscription.pk]
    assert Trade.objects.get(execution=entry, subscription=good.subscription).status == "open"
    # and each subscriber is told of their own: the rejection and the pause, with the
    # exchange's reason, and the fill; no key or secret in any of it
    heard = {(n.user_id, n.event): n.payload for n in Notification.objects.all()}
    assert set(heard) == {
        (bad.subscription.user_id, "order.rejected"),
        (bad.subscription.user_id, "subscription.paused"),
        (good.subscription.user_id, "trade.filled"),
    }
    assert "AuthenticationError" in heard[(bad.subscription.user_id, "order.rejected")]["reason"]
    pause = heard[(bad.subscription.user_id, "subscription.paused")]
    assert pause["subscription_id"] == bad.subscription.pk
    assert "AuthenticationError" in pause["reason"]
    text = json.dumps(list(heard.values()))
    assert not any(s in text for s in (bad.api_key, bad.secret, good.api_key, good.secret))


def test_below_minimum_notional_is_skipped_with_the_reason(sim, market):
    # given a subscriber whose order rounds to one lot but stays under the minimum notional
    strategy = StrategyFactory(settings={"signal": "LONG"})
    small = live_trader(sim, strategy, capital="0.008")

    # when the entry fans out
    entry = run_close(sim, strategy, market[10])

    # then nothing was sent and the trade says why
    trade = Trade.objects.get(execution=entry, subscription=small.subscription)
    assert trade.status == "skipped"
    assert "below the market minimum" in trade.error and "minimum notional" in trade.error
    assert Order.objects.get(trade=trade).status == "skipped"
    assert sim.orders() == []


def test_bump_to_minimum_only_within_capital_times_leverage(sim, market):
    # given two subscribers below the minimum with the bump policy, one who can afford it
    strategy = StrategyFactory(settings={"signal": "LONG"})
    affordable = live_trader(sim, strategy, capital="0.008", min_order_policy="bump_to_minimum")
    too_small = live_trader(sim, strategy, capital="0.00005", min_order_policy="bump_to_minimum")

    # when the entry fans out
    entry = run_close(sim, strategy, market[10])

    # then the first is bumped to the market's minimum notional, the second skipped
    bumped = Trade.objects.get(execution=entry, subscription=affordable.subscription)
    assert bumped.status == "open"
    assert bumped.quantity * bumped.entry_price >= Decimal("0.0001")
    assert bumped.quantity * bumped.entry_price <= Decimal("0.008")
    skipped = Trade.objects.get(execution=entry, subscription=too_small.subscription)
    assert skipped.status == "skipped" and "exceed capital x leverage" in skipped.error
    assert len(sim.orders()) == 1


def test_price_moved_beyond_the_band_skips_entries(sim, market, settings):
    # given a band of 1% and an exchange price 1.9% above the signal's
    settings.ENTRY_PRICE_BAND = Decimal("0.01")
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy)
    sim.clock(None)  # the simulator trades at its newest candle, 19 candles later

    # when the entry fans out
    outcome = execution_run(
        strategy_id=strategy.pk,
        interval_start=market[10] - STEP,
        trigger="replay",
        inline_fanout=True,
    )

    # then the entry is skipped with the move in the reason, nothing sent
    trade = Trade.objects.get(execution_id=outcome.execution_id, subscription=trader.subscription)
    assert trade.status == "skipped" and "price moved" in trade.error
    assert sim.orders() == []


def test_stale_signal_skips_entries_but_exits_always_execute(sim, market, settings):
    # given an open live position
    strategy = StrategyFactory(settings={"signal": "LONG"})
    trader = live_trader(sim, strategy)
    entry = run_close(sim, strategy, market[10])
    assert Trade.objects.get(execution=entry).status == "open"

    # when signals arrive older than the maximum age (every signal is, with a negative max)
    settings.SIGNAL_MAX_AGE_S = -1
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    exit_execution = run_close(sim, strategy, market[12])
    strategy_update_settings(strategy=strategy, settings={"signal": "LONG"})
    late_entry = run_close(sim, strategy, market[14])

    # then the exit executed and the late entry was skipped for its age
    assert Trade.objects.get(execution=entry).status == "closed"
    assert Trade.objects.get(execution=entry).exit_execution_id == exit_execution.pk
    skipped = Trade.objects.get(execution=late_entry, subscription=trader.subscription)
    assert skipped.status == "skipped" and "old" in skipped.error


def _market_that_moves(last: float) -> list[datetime]:
    """Candles flat at 0.05, then one at ``last``."""
    rows = []
    for i in range(12):
        price = 0.05 if i < 11 else last
        rows.append(
            [datetime_to_ms(START + STEP * i), price, price * 1.001, price * 0.999, price, 10.0]
        )
    load_candles(rows=rows)
    return [START + STEP * (i + 1) for i in range(12)]


@pytest.mark.parametrize("mode", ["live", "paper"])
def test_stop_loss_hit_closes_the_position_with_its_pnl(sim, mode):
    # given an open long with a 1% stop, on a market that then falls 2%
    closes = _market_that_moves(0.049)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    trader = _trader(sim, strategy, mode)
    entry = run_close(sim, strategy, closes[9])
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open" and trade.stop_loss == Decimal("0.0495")

    # when the falling candle closes (live: and the order sync runs)
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD", "sl": 0.01, "tp": 0.05})
    checked = run_close(sim, strategy, closes[11])
    if mode == "live":
        orders_sync_open()

    # then the stop closed it: live by the stop order resting on the exchange (the simulator
    # fills it at its stop price), paper at candle close at the candle's open of 0.049, the
    # first price traded under the stop it gapped through (less slippage); PnL net of fees
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "stop loss"
    assert trade.exit_execution_id == (None if mode == "live" else checked.pk)
    slippage = 1 - django_settings.PAPER_SLIPPAGE_BPS / 10000
    expected_exit = Decimal("0.0495") if mode == "live" else Decimal("0.049") * slippage
    assert trade.exit_price == expected_exit
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8")) and trade.pnl < 0
    position = Position.objects.get(subscription=trader)
    assert (position.side, position.realized_pnl) == ("flat", trade.pnl)


@pytest.mark.parametrize("mode", ["live", "paper"])
def test_take_profit_hit_closes_the_position_with_its_pnl(sim, mode):
    # given an open long with a take profit 1% above the entry, on a market that rises 2%
    closes = _market_that_moves(0.051)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.05, "tp": 0.01})
    trader = _trader(sim, strategy, mode)
    entry = run_close(sim, strategy, closes[9])
    trade = Trade.objects.get(execution=entry)

    # when the rising candle closes (live: and the order sync runs)
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD", "sl": 0.05, "tp": 0.01})
    run_close(sim, strategy, closes[11])
    if mode == "live":
        orders_sync_open()

    # then the position is closed in profit (live by the take-profit order on the exchange,
    # paper at the candle's open of 0.051, beyond the target it gapped over), net of fees
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "take profit"
    slippage = 1 - django_settings.PAPER_SLIPPAGE_BPS / 10000
    expected_exit = Decimal("0.0505") if mode == "live" else Decimal("0.051") * slippage
    assert trade.exit_price == expected_exit
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8")) and trade.pnl > 0
    position = Position.objects.get(subscription=trader)
    assert (position.side, position.realized_pnl) == ("flat", trade.pnl)


def _trader(sim: Sim, strategy, mode: str) -> StrategySubscription:
    if mode == "live":
        return live_trader(sim, strategy).subscription
    from tests.factories import subscribe

    return subscribe(strategy, capital="1")


def test_join_now_enters_at_the_next_close_next_signal_waits(sim, market):
    # given a strategy holding a long, and two subscribers who join afterwards
    strategy = StrategyFactory(settings={"signal": "LONG"})
    early = live_trader(sim, strategy)
    entry = run_close(sim, strategy, market[10])
    joiner = live_trader(sim, strategy, join_policy="join_now")
    waiter = live_trader(sim, strategy)

    # when the next candle closes without a new signal
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD"})
    run_close(sim, strategy, market[11])

    # then the join_now subscriber holds the strategy's position, the other waits
    joined = Trade.objects.get(subscription=joiner.subscription)
    assert joined.execution_id == entry.pk and joined.status == "open"
    assert joined.entry_price == StrategyExecution.objects.get(interval_end=market[11]).close_price
    assert not Trade.objects.filter(subscription=waiter.subscription).exists()
    assert Trade.objects.filter(subscription=early.subscription).count() == 1
