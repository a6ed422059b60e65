"""execution_run in process: the fence, the lock, timing, failures, and events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from core.events import EventType, event_channel, event_subscribe
from core.locks import lock_acquire, strategy_run_lock_key
from core.redis_client import get_redis
from core.time_utils import datetime_to_ms, format_interval_key, round_to_interval_boundary
from execution.services import execution_run
from notifications.models import Notification
from strategies.models import StrategyExecution
from strategies.services import strategy_update_settings
from subscriptions.services import subscription_create
from tests.api.helpers import client_for
from tests.factories import StrategyFactory, UserFactory, flat_candles, load_candles, subscribe
from tests.strategy_code import SCRIPTED
from trades.models import Trade

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


@pytest.fixture
def market():
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=20))


def _run(strategy, index: int, **kwargs):
    return execution_run(
        strategy_id=strategy.pk,
        interval_start=START + STEP * index,
        trigger=kwargs.pop("trigger", "replay"),
        inline_fanout=True,
        **kwargs,
    )


def test_second_run_of_the_same_candle_is_a_duplicate(market):
    # given an executed candle
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy)
    first = _run(strategy, 8)
    # when it is run again
    again = _run(strategy, 8)
    # then nothing new is recorded
    assert first.outcome == "ran" and again.outcome == "duplicate"
    assert again.execution_id == first.execution_id
    assert StrategyExecution.objects.count() == 1 and Trade.objects.count() == 1


def test_held_lock_means_another_worker_runs_it(market):
    strategy = StrategyFactory()
    subscribe(strategy)
    key = strategy_run_lock_key(
        strategy_id=strategy.pk, interval_key=format_interval_key(START + STEP * 3, "5m")
    )
    assert lock_acquire(key=key, ttl_s=60)
    outcome = _run(strategy, 3)
    assert outcome.outcome == "locked" and not StrategyExecution.objects.exists()


def test_strategy_without_active_subscribers_does_not_run(market):
    strategy = StrategyFactory()
    assert _run(strategy, 3).outcome == "inactive"
    assert not StrategyExecution.objects.exists()


def test_row_left_running_by_a_dead_worker_is_taken_over(market):
    # given a row a crashed worker left running (its lock has expired)
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy)
    StrategyExecution.objects.create(
        strategy=strategy,
        interval_start=START + STEP * 6,
        interval_end=START + STEP * 7,
        started_at=timezone.now(),
        status="running",
        worker_id="dead:1",
    )
    # when the redelivered task runs
    outcome = _run(strategy, 6)
    # then the same row completes, once, with its fan-out
    row = StrategyExecution.objects.get()
    assert outcome.outcome == "ran" and row.status == "success" and row.attempts == 2
    assert Trade.objects.filter(execution=row).count() == 1


def test_a_worker_whose_execution_was_taken_over_meanwhile_records_nothing(market, monkeypatch):
    # given a strategy whose run outlives its worker's claim: while it runs, another worker
    # takes the execution over (as after a partition, once the lock expired)
    import execution.services as services

    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy)
    real_run = services.run_strategy

    def run_then_lose_the_claim(**kwargs):
        result = real_run(**kwargs)
        StrategyExecution.objects.update(attempts=2, worker_id="taker:2")
        return result

    monkeypatch.setattr(services, "run_strategy", run_then_lose_the_claim)

    # when the first worker's run ends
    outcome = _run(strategy, 6)

    # then it records nothing over the taker's row, and fans nothing out
    row = StrategyExecution.objects.get()
    assert outcome.outcome == "taken_over" and outcome.execution_id == row.pk
    assert row.status == "running" and row.attempts == 2 and row.worker_id == "taker:2"
    assert row.signal is None and row.fanout_dispatched_at is None
    assert not Trade.objects.exists()


def test_failing_strategy_is_recorded_and_places_no_orders(market):
    strategy = StrategyFactory(code="def generate_signal(candles, settings):\n    return 1 / 0\n")
    subscribe(strategy)
    outcome = _run(strategy, 5)
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert row.status == "failed" and "ZeroDivisionError" in row.error
    assert not Trade.objects.exists()
    # the execution records how the strategy was isolated
    assert row.sandbox_isolation in ("bwrap", "rlimit", "cold")
    # and the author, only the author, is told, with the error and its line
    notice = Notification.objects.get()
    assert (notice.user_id, notice.event) == (strategy.owner_id, "execution.failed")
    assert notice.payload["execution_id"] == row.pk and notice.payload["line"] == 2
    assert "ZeroDivisionError" in notice.payload["error"]


INVERTED_STOP = (
    "def generate_signal(c, s):\n    return {'signal': 'LONG', 'price': 1, 'stopLoss': 2}\n"
)


def test_invalid_signal_fails_the_execution(market):
    strategy = StrategyFactory(code=INVERTED_STOP)
    subscribe(strategy)
    row = StrategyExecution.objects.get(pk=_run(strategy, 5).execution_id)
    assert row.status == "failed" and "stopLoss" in row.error


def test_missing_candle_is_skipped_with_the_reason(market):
    strategy = StrategyFactory()
    subscribe(strategy)
    row = StrategyExecution.objects.get(pk=_run(strategy, 40).execution_id)
    assert row.status == "skipped" and "did not reach the candle store" in row.error


def test_a_missing_paper_candle_is_skipped_at_once_without_claiming_a_wait(market, settings):
    # given a paper-market strategy (its candles are only what was imported)
    settings.CANDLE_SETTLE_S = 30.0
    strategy = StrategyFactory(exchange="paper")
    subscribe(strategy)

    # when a close arrives whose candle was never imported
    row = StrategyExecution.objects.get(pk=_run(strategy, 40).execution_id)

    # then it is skipped with the reason, not one of a wait for a fetch that never happens
    assert row.status == "skipped"
    assert "paper candles are not fetched" in row.error and "30 s" not in row.error


def test_beat_trigger_before_the_close_is_refused_and_a_stale_one_skipped():
    strategy = StrategyFactory()
    subscribe(strategy)
    now = timezone.now()
    current_open = round_to_interval_boundary(now, "5m")
    # the candle still open has not closed: refused, no row
    early = execution_run(strategy_id=strategy.pk, interval_start=current_open, trigger="beat")
    assert early.outcome == "not_closed" and not StrategyExecution.objects.exists()
    # a trigger for a candle closed an hour ago is stale: recorded as skipped
    stale = execution_run(
        strategy_id=strategy.pk, interval_start=current_open - 12 * STEP, trigger="beat"
    )
    row = StrategyExecution.objects.get(pk=stale.execution_id)
    assert row.status == "skipped" and "stale" in row.error


def test_events_are_delivered_in_process_and_on_redis(market):
    # given an in-process listener and a Redis subscriber
    seen: list[str] = []
    unsubscribe = event_subscribe(
        event_type=EventType.EXECUTION_COMPLETE, handler=lambda e: seen.append(e.payload["status"])
    )
    pubsub = get_redis().pubsub()
    pubsub.subscribe(event_channel(EventType.EXECUTION_COMPLETE))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    strategy = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(strategy)
    try:
        # when an execution completes
        _run(strategy, 4)
        message = pubsub.get_message(timeout=2)
    finally:
        unsubscribe()
        pubsub.close()
    # then both saw it
    assert seen == ["no_signal"]
    assert json.loads(message["data"])["payload"]["status"] == "no_signal"


def test_every_fill_and_close_of_a_fanout_is_announced_once_at_commit(market):
    # given three subscribers, listeners in process, and a Redis subscriber to trade events
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subs = sorted(subscribe(strategy).pk for _ in range(3))
    heard: list[tuple[str, int]] = []
    listeners = [
        event_subscribe(
            event_type=kind, handler=lambda e: heard.append((e.type, e.payload["subscription_id"]))
        )
        for kind in (EventType.TRADE_FILLED, EventType.TRADE_CLOSED)
    ]
    pubsub = get_redis().pubsub()
    pubsub.subscribe(event_channel(EventType.TRADE_FILLED), event_channel(EventType.TRADE_CLOSED))
    for _ in range(2):
        pubsub.get_message(timeout=1)  # the subscribe confirmations
    try:
        # when an entry fans out, then an exit
        _run(strategy, 4)
        strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
        _run(strategy, 5)
        published = [pubsub.get_message(timeout=2) for _ in range(6)]
    finally:
        for unsubscribe in listeners:
            unsubscribe()
        pubsub.close()

    # then each trade was announced filled, then closed, in process and on Redis alike
    filled = [(EventType.TRADE_FILLED, pk) for pk in subs]
    closed = [(EventType.TRADE_CLOSED, pk) for pk in subs]
    assert sorted(heard[:3]) == filled and sorted(heard[3:]) == closed
    bodies = [json.loads(m["data"]) for m in published if m is not None]
    assert [(b["type"], b["payload"]["subscription_id"]) for b in bodies] == heard


def test_settings_change_is_used_by_the_next_execution(market):
    strategy = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(strategy)
    first = StrategyExecution.objects.get(pk=_run(strategy, 4).execution_id)
    strategy_update_settings(strategy=strategy, settings={"signal": "LONG"})
    second = StrategyExecution.objects.get(pk=_run(strategy, 5).execution_id)
    assert (first.status, first.settings_version) == ("no_signal", 1)
    assert (second.status, second.settings_version) == ("success", 2)


def test_an_exit_that_closes_trades_counts_them_as_trades_generated(market):
    # given two subscribers holding longs entered by one execution
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy), subscribe(strategy)
    entry = StrategyExecution.objects.get(pk=_run(strategy, 4).execution_id)

    # when the next execution exits
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    exit_ = StrategyExecution.objects.get(pk=_run(strategy, 5).execution_id)

    # then each execution counts the trades it opened or closed
    assert (entry.trades_generated, exit_.trades_generated) == (2, 2)
    assert Trade.objects.filter(status="closed", exit_execution=exit_).count() == 2


def test_stop_loss_touched_by_a_closed_candle_closes_the_trade(market):
    # given an open long with a stop 0.05% under the entry
    strategy = StrategyFactory(settings={"signal": "LONG", "stop_pct": 0.0005})
    sub = subscribe(strategy)
    _run(strategy, 4)
    trade = Trade.objects.get()
    # when the next candle's low (0.2% under its close) goes through the stop
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD"})
    _run(strategy, 5)
    # then the trade is closed at the stop, with a loss net of fees
    trade.refresh_from_db()
    sub.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "stop loss"
    assert trade.pnl < 0 and sub.realized_pnl == trade.pnl


def test_a_backfilled_close_from_long_ago_enters_nobody_but_a_replay_does(market):
    # given two strategies signalling LONG on a close from 2018
    backfilled = StrategyFactory(settings={"signal": "LONG"})
    replayed = StrategyFactory(settings={"signal": "LONG"})
    subscribe(backfilled)
    subscribe(replayed)

    # when the stream backfills that close, and an operator replays it
    stale = StrategyExecution.objects.get(pk=_run(backfilled, 5, trigger="backfill").execution_id)
    fresh = StrategyExecution.objects.get(pk=_run(replayed, 5, trigger="replay").execution_id)

    # then the backfilled signal is too old to enter on, the replay enters
    assert stale.status == fresh.status == "success"
    skipped = Trade.objects.get(execution=stale)
    assert skipped.status == "skipped" and "old" in skipped.error
    assert Trade.objects.get(execution=fresh).status == "open"


# A LONG claiming twice the close as its price, to pass a stop 1.5x the close as "below" it:
# the next candle, entirely under that stop, would "stop it out" at a price never traded.
FABRICATED_STOP = """
def generate_signal(candles, settings):
    close = float(candles["close"].iloc[-1])
    return {"signal": "LONG", "price": close * 2, "stopLoss": close * 1.5}
"""


def test_a_fabricated_price_and_stop_book_no_profit(market):
    # given a strategy returning a stop above the market, made "valid" by a fabricated price
    strategy = StrategyFactory(code=FABRICATED_STOP)
    sub = subscribe(strategy)

    # when two candles close
    first = StrategyExecution.objects.get(pk=_run(strategy, 4).execution_id)
    _run(strategy, 5)

    # then the signal is invalid (its stop is checked against the close), nothing was entered
    # or closed, and the subscriber's record shows no profit
    assert first.status == "failed" and first.error.startswith("invalid signal: stopLoss")
    assert "must be below the market price" in first.error
    assert not Trade.objects.filter(status__in=("open", "closed")).exists()
    sub.refresh_from_db()
    assert sub.realized_pnl == 0
    stats = client_for(sub.user).get(f"/api/strategies/subscriptions/{sub.pk}/stats").json()
    assert stats["trades"] == 0 and Decimal(stats["realized_pnl"]) == 0


def test_a_stop_the_market_gapped_through_fills_at_the_open():
    # given an open paper long with a 1% stop, and a next candle opening 5% lower
    rows = flat_candles(start_ms=datetime_to_ms(START), count=8)
    gap_open = 0.0475  # about 5% under the entry's close of 0.0502
    rows[5] = [rows[5][0], gap_open, gap_open * 1.001, gap_open * 0.99, gap_open, 10.0]
    load_candles(rows=rows)
    strategy = StrategyFactory(settings={"signal": "LONG", "stop_pct": 0.01})
    sub = subscribe(strategy)
    _run(strategy, 4)
    trade = Trade.objects.get()

    # when the gap candle closes
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD"})
    _run(strategy, 5)

    # then the stop filled at the candle's open (less slippage), the first price traded
    # beyond it, and the loss booked is the market's, not the 1% the stop promised
    trade.refresh_from_db()
    slippage = 1 - Decimal(django_settings.PAPER_SLIPPAGE_BPS) / 10000
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "stop loss"
    assert trade.exit_price == (Decimal(str(gap_open)) * slippage).quantize(Decimal("1e-12"))
    assert trade.exit_price < trade.stop_loss
    sub.refresh_from_db()
    assert sub.realized_pnl == trade.pnl < -(trade.quantity * (trade.entry_price - trade.stop_loss))


BEYOND_THE_COLUMNS = {
    "a take profit of 1e24": (
        "def generate_signal(candles, settings):\n"
        "    close = float(candles['close'].iloc[-1])\n"
        "    return {'signal': 'LONG', 'price': close, 'takeProfit': 1e24}\n",
        "invalid signal: 'takeProfit' 1e+24 is too large",
    ),
    "a price of 10**400": (
        "def generate_signal(candles, settings):\n"
        "    return {'signal': 'LONG', 'price': 10**400}\n",
        "invalid signal: 'price' 1.000000e+400 is too large",
    ),
}


@pytest.mark.parametrize("case", BEYOND_THE_COLUMNS, ids=list(BEYOND_THE_COLUMNS))
def test_numbers_beyond_the_columns_are_invalid_signals(market, case):
    # given a strategy returning a number no price column can hold
    code, reason = BEYOND_THE_COLUMNS[case]
    strategy = StrategyFactory(code=code)
    sub = subscribe(strategy)

    # when its candle closes
    row = StrategyExecution.objects.get(pk=_run(strategy, 5).execution_id)

    # then the execution is an invalid signal with the reason, nobody entered,
    # and the subscriber's trades still read
    assert row.status == "failed" and row.error.startswith(reason), row.error
    assert not Trade.objects.exists()
    response = client_for(sub.user).get(f"/api/strategies/subscriptions/{sub.pk}/trades")
    assert response.status_code == 200 and response.json()["count"] == 0


def test_a_position_too_large_for_its_columns_is_skipped_with_the_reason():
    # given a market priced at 1e-10 and a subscriber whose size there is 1e19 units
    rows = flat_candles(start_ms=datetime_to_ms(START), count=8, price=1e-10)
    for row in rows:
        row[1:5] = [1e-10] * 4
    load_candles(rows=rows)
    strategy = StrategyFactory(settings={"signal": "LONG"})
    big = subscribe(strategy, capital="100000000000")
    small = subscribe(strategy, capital="1000")

    # when a LONG fans out
    row = StrategyExecution.objects.get(pk=_run(strategy, 4).execution_id)

    # then that subscriber's order is skipped with the reason, the other one trades,
    # and both read their trades
    assert row.status == "success"
    skipped = Trade.objects.get(subscription=big)
    assert skipped.status == "skipped" and "quantity" in skipped.error, skipped.error
    assert "does not fit" in skipped.error
    assert Trade.objects.get(subscription=small).status == "open"
    for sub in (big, small):
        response = client_for(sub.user).get(f"/api/strategies/subscriptions/{sub.pk}/trades")
        assert response.status_code == 200


TARGET_FAR_AWAY = """
def generate_signal(candles, settings):
    close = float(candles["close"].iloc[-1])
    return {"signal": "LONG", "price": close, "takeProfit": 1e17}
"""


def test_an_order_whose_pnl_at_its_target_cannot_be_stored_is_skipped(market):
    # given a target (storable as a price) at which the position's PnL overflows the money column
    strategy = StrategyFactory(code=TARGET_FAR_AWAY)
    sub = subscribe(strategy)

    # when it fans out
    row = StrategyExecution.objects.get(pk=_run(strategy, 5).execution_id)

    # then the order is skipped with the reason
    trade = Trade.objects.get(subscription=sub)
    assert row.status == "success"
    assert trade.status == "skipped" and "PnL at the take profit" in trade.error, trade.error


WITH_TARGET = """
def generate_signal(candles, settings):
    if settings.get("signal") != "LONG":
        return None
    close = float(candles["close"].iloc[-1])
    return {"signal": "LONG", "price": close, "takeProfit": close * 1.01}
"""


def test_join_now_does_not_enter_once_the_market_is_past_the_target():
    # given a strategy holding a long with a 1% target, and a join_now subscriber joining after
    rows = flat_candles(start_ms=datetime_to_ms(START), count=8)
    jump = rows[4][4] * 1.05
    rows[5] = [rows[5][0], jump, jump * 1.001, jump * 0.999, jump, 10.0]
    load_candles(rows=rows)
    strategy = StrategyFactory(code=WITH_TARGET, settings={"signal": "LONG"})
    first = subscribe(strategy)
    entry = StrategyExecution.objects.get(pk=_run(strategy, 4).execution_id)
    joiner = subscription_create(
        user=UserFactory(),
        strategy=strategy,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.01"),
        join_policy="join_now",
    )

    # when the next candle closes 5% higher, above the target
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD"})
    _run(strategy, 5)

    # then the holder took its profit, and the joiner did not enter a trade already past it
    held = Trade.objects.get(execution=entry, subscription=first)
    assert held.status == "closed" and held.metadata["exit_reason"] == "take profit"
    assert not Trade.objects.filter(subscription=joiner).exists()


WARM_UP = SCRIPTED.replace("LOOKBACK = 5\n", "LOOKBACK = 50\n")


def test_an_execution_with_fewer_candles_than_its_lookback_is_skipped_as_warming_up():
    # given a LONG strategy needing 50 candles, on a market with 50 stored
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=50))
    strategy = StrategyFactory(code=WARM_UP, lookback=50, settings={"signal": "LONG"})
    subscribe(strategy)

    # when the fourth candle closes (4 of them closed so far)
    row = StrategyExecution.objects.get(pk=_run(strategy, 3).execution_id)

    # then the execution is skipped with the reason, the strategy did not run, nobody entered
    assert (row.status, row.error) == ("skipped", "warming up: 4 of 50 candles")
    assert row.candles_used == 4 and row.signal is None and row.logs == ""
    assert not Trade.objects.exists()


def test_an_execution_with_as_many_candles_as_its_lookback_runs():
    # given the same strategy and market
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=50))
    strategy = StrategyFactory(code=WARM_UP, lookback=50, settings={"signal": "LONG"})
    subscribe(strategy)

    # when the fiftieth candle closes
    row = StrategyExecution.objects.get(pk=_run(strategy, 49).execution_id)

    # then the strategy ran on all 50 and its LONG fanned out
    assert (row.status, row.error, row.candles_used) == ("success", "", 50)
    assert row.signal["metadata"]["rows"] == 50
    assert Trade.objects.get(execution=row).status == "open"
