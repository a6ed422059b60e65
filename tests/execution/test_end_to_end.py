"""The platform end to end, on real Celery worker processes, Redis and the test database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.time_utils import datetime_to_ms
from execution.tasks import candle_close
from strategies.models import StrategyExecution
from strategies.services import strategy_update_settings
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from tests.workers import WorkerPool, wait_for
from trades.models import Trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


def _market(count: int = 30) -> list[datetime]:
    """Load ``count`` candles; return their close times."""
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=count))
    return [START + STEP * (i + 1) for i in range(count)]


def _settled(strategy_id: int, interval_start: datetime) -> StrategyExecution | None:
    row = StrategyExecution.objects.filter(
        strategy_id=strategy_id, interval_start=interval_start
    ).first()
    if row is None or not row.is_final:
        return None
    if row.status == "success" and (
        row.fanout_dispatched_at is None or row.fanout_done < row.fanout_total
    ):
        return None
    return row


def _close(strategy_id: int, close: datetime) -> StrategyExecution:
    candle_close.delay(resolution="5m", close_time=close.isoformat(), trigger="replay")
    return wait_for(lambda: _settled(strategy_id, close - STEP), timeout=60, what="execution")


def test_entry_then_exit_fans_out_to_every_subscriber(celery_workers):
    # given a deployed strategy with three subscribers of different sizes
    closes = _market()
    strategy = StrategyFactory(settings={"signal": "LONG", "stop_pct": 0.02})
    subs = [
        subscribe(strategy, capital="1", risk="0.01", leverage="1"),
        subscribe(strategy, capital="5", risk="0.02", leverage="2"),
        subscribe(strategy, capital="20", risk="0.005", leverage="3"),
    ]

    # when a candle closes with a LONG signal
    entry = _close(strategy.pk, closes[10])

    # then one execution fanned out one trade per subscriber, each sized by its own settings
    assert entry.status == "success" and entry.signal["signal"] == "LONG"
    assert StrategyExecution.objects.filter(strategy=strategy).count() == 1
    trades = {t.subscription_id: t for t in Trade.objects.filter(execution=entry)}
    assert len(trades) == 3 and all(t.status == "open" for t in trades.values())
    close_price = entry.close_price
    for sub in subs:
        trade = trades[sub.pk]
        risk_amount = sub.capital * sub.risk_per_trade
        loss_at_stop = trade.quantity * (close_price - trade.stop_loss)
        assert loss_at_stop <= risk_amount
        assert loss_at_stop == pytest.approx(risk_amount, rel=Decimal("0.001"))
    # 10x the risk budget buys 10x the quantity, up to the 1e-8 step quantities are rounded down to
    small, large = trades[subs[0].pk].quantity, trades[subs[1].pk].quantity
    assert abs(large - 10 * small) < Decimal("0.0000001")

    # when a later candle closes with EXIT_LONG
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    exit_execution = _close(strategy.pk, closes[15])

    # then every trade is closed with its PnL net of fees, and subscribers' PnL add up
    assert exit_execution.settings_version == 2
    for sub in subs:
        trade = Trade.objects.get(execution=entry, subscription=sub)
        assert trade.status == "closed" and trade.exit_execution_id == exit_execution.pk
        gross = (trade.exit_price - trade.entry_price) * trade.quantity
        # PnL is stored to 1e-8 (the money scale)
        assert abs(trade.pnl - (gross - trade.entry_fee - trade.exit_fee)) <= Decimal("0.00000001")
        assert trade.pnl > 0  # the test market rises between the two closes
        sub.refresh_from_db()
        assert sub.realized_pnl == trade.pnl


def test_paused_subscriber_gets_no_trade(celery_workers):
    # given two subscribers, one of them paused
    from subscriptions.services import subscription_pause

    closes = _market()
    strategy = StrategyFactory(settings={"signal": "LONG"})
    active = subscribe(strategy)
    paused = subscription_pause(subscription=subscribe(strategy))

    # when an entry signal fans out
    execution = _close(strategy.pk, closes[5])

    # then only the active subscriber trades
    assert list(
        Trade.objects.filter(execution=execution).values_list("subscription_id", flat=True)
    ) == [active.pk]
    assert not Trade.objects.filter(subscription=paused).exists()


def test_no_look_ahead_strategy_sees_only_closed_candles(celery_workers):
    # given a market with candles after the closing interval already stored
    closes = _market(count=30)
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy)

    # when the close at index 10 is executed
    execution = _close(strategy.pk, closes[10])

    # then the last candle the strategy saw is the one that just closed, never a later one
    seen_last = datetime.fromisoformat(execution.signal["metadata"]["last_ts"])
    assert seen_last == closes[10] - STEP
    assert execution.candles_used == 5


def test_two_workers_and_duplicate_triggers_run_once(celery_workers):
    # given a second worker node beside the shared one, and three subscribers
    closes = _market()
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subs = [subscribe(strategy) for _ in range(3)]
    with WorkerPool(count=1, concurrency=2):
        # when the same candle close is triggered six times at once
        for _ in range(6):
            # (historical closes: a "beat" trigger this late would rightly be skipped as stale)
            candle_close.delay(resolution="5m", close_time=closes[8].isoformat(), trigger="manual")
            candle_close.delay(resolution="5m", close_time=closes[8].isoformat(), trigger="replay")
        execution = wait_for(lambda: _settled(strategy.pk, closes[8] - STEP), what="execution")
        wait_for(lambda: Trade.objects.filter(execution=execution).count() == 3, what="trades")

    # then exactly one execution and one entry trade per subscriber exist
    assert StrategyExecution.objects.filter(strategy=strategy).count() == 1
    for sub in subs:
        assert Trade.objects.filter(subscription=sub).count() == 1
