"""A strategy's track record: a reference paper account following every real-time close."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from backtests.models import StrategyRecord
from backtests.record import record_refresh, record_series
from core.time_utils import datetime_to_ms
from execution.services import execution_run
from strategies.services import strategy_update_settings
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from trades.models import Trade

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


@pytest.fixture
def market():
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=30))


def _beat(settings, strategy, index: int, **signal):
    """A beat execution just after its candle closed, on a replay clock set to that close."""
    if signal:
        strategy_update_settings(strategy=strategy, settings=signal)
    close = START + STEP * (index + 1)
    settings.MARKET_CLOCK = f"{(close + timedelta(seconds=1)).isoformat()}@1@{time.time()}"
    return execution_run(
        strategy_id=strategy.pk,
        interval_start=START + STEP * index,
        trigger="beat",
        inline_fanout=True,
    )


def test_the_record_equals_a_paper_subscriber_of_unit_capital(market, settings):
    # given a paper subscriber with the reference account's sizing
    strategy = StrategyFactory(settings={"signal": "HOLD"})
    sub = subscribe(strategy, capital="1", risk="0.01", leverage="1")

    # when beat runs a long with a stop, holds, exits, then goes short and holds it
    _beat(settings, strategy, 5, signal="LONG", stop_pct=0.01)
    _beat(settings, strategy, 6, signal="HOLD")
    _beat(settings, strategy, 7, signal="EXIT_LONG")
    _beat(settings, strategy, 8, signal="SHORT", stop_pct=0.01)
    _beat(settings, strategy, 9, signal="HOLD")

    # then the record made the same trades, with the same realized PnL
    record = StrategyRecord.objects.get(strategy=strategy)
    sub.refresh_from_db()
    paper = Trade.objects.filter(subscription=sub, status__in=["open", "closed"])
    series = record_series(record=record)
    ours = [(t.side, t.quantity, t.entry_price, t.exit_price, t.pnl) for t in series.trades]
    theirs = [
        (t.side, t.quantity, t.entry_price, t.exit_price, t.pnl)
        for t in paper.order_by("entry_time")
    ]
    assert ours == theirs and len(ours) == 2
    assert record.realized == sub.realized_pnl != 0
    # and it was valued at every close, the short still open at the last one
    assert record.last_close == START + STEP * 10 and len(series.equity) == 5
    assert record.position is not None and record.position["side"] == "short"


def test_a_replay_or_a_backfill_of_an_older_close_leaves_the_record_alone(market, settings):
    # given a record that followed a long up to a close
    strategy = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(strategy, capital="1")
    _beat(settings, strategy, 10, signal="LONG")
    before = StrategyRecord.objects.get(strategy=strategy)
    points = len(record_series(record=before).equity)

    # when older candles are replayed by an operator and backfilled by the stream
    strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
    replay = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 7, trigger="replay"
    )
    backfill = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 8, trigger="backfill"
    )

    # then both ran, and the record is as it was
    assert replay.outcome == backfill.outcome == "ran"
    after = StrategyRecord.objects.get(strategy=strategy)
    assert (after.last_close, after.position, after.realized) == (
        before.last_close,
        before.position,
        before.realized,
    )
    assert len(record_series(record=after).equity) == points == 1


def test_a_failed_execution_still_values_the_account_and_checks_its_stops(market, settings):
    # given a record holding a long with a stop just under the entry
    strategy = StrategyFactory(settings={"signal": "LONG", "stop_pct": 0.0005})
    subscribe(strategy, capital="1")
    _beat(settings, strategy, 5)

    # when the next execution fails, on a candle whose low goes through the stop
    strategy.code = "def generate_signal(candles, settings):\n    return 1 / 0\n"
    strategy.save(update_fields=["code"])
    _beat(settings, strategy, 6)

    # then the stop closed the position and the close was valued
    record = StrategyRecord.objects.get(strategy=strategy)
    series = record_series(record=record)
    assert record.position is None and series.trades[0].exit_reason == "stop loss"
    assert record.realized < 0 and series.equity[-1] == 1 + record.realized
    assert record.last_close == START + STEP * 7


def test_refreshed_figures_are_stored_for_the_listing(market, settings):
    # given a record with one closed, losing round trip (fees)
    strategy = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(strategy, capital="1")
    _beat(settings, strategy, 5, signal="LONG")
    _beat(settings, strategy, 6, signal="EXIT_LONG")

    # when its figures are refreshed
    record = StrategyRecord.objects.get(strategy=strategy)
    record_refresh(record=record, now=START + STEP * 7)

    # then they are stored, in percent
    record.refresh_from_db()
    assert record.trades == 1 and record.win_rate_pct in (0, 100)
    assert record.return_total_pct == (record.realized * 100).quantize(Decimal("0.0001"))
    assert record.return_7d_pct == record.return_total_pct
    assert record.max_drawdown_pct is not None and record.max_drawdown_pct >= 0
    assert record.subscribers == 1 and record.figures_at is not None
