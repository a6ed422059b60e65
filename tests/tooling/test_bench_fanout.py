"""bench_fanout's figures, read back from the rows a fan-out leaves."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api.helpers import make_order, make_trade
from tests.factories import StrategyFactory, subscribe
from tooling.bench_fanout import BenchRun, bench_figures, bench_warmups
from tooling.live_processes import QueueWorker
from trades.models import Order, Trade
from trades.purposes import OrderPurpose


@pytest.mark.django_db
def test_an_exit_signals_last_trade_recorded_is_read_from_the_trades_it_closed():
    # given a trade opened by one execution and closed by a later one, 1.5 s after its signal
    trade = make_trade(subscribe(StrategyFactory()), status="closed")
    order = make_order(trade, purpose=OrderPurpose.exit(trade.pk))
    exit_execution = order.execution
    signal = exit_execution.finished_at
    exit_execution.fanout_dispatched_at = signal + timedelta(seconds=0.1)
    exit_execution.last_order_at = signal + timedelta(seconds=2)  # its last batch finished
    exit_execution.save(update_fields=["fanout_dispatched_at", "last_order_at"])
    Order.objects.filter(pk=order.pk).update(acknowledged_at=signal + timedelta(seconds=1))
    Trade.objects.filter(pk=trade.pk).update(
        exit_execution=exit_execution, updated_at=signal + timedelta(seconds=1.5)
    )

    # when the exit execution's figures are read
    figures = bench_figures(exit_execution.pk)

    # then the last trade recorded is the closed trade's, not the signal itself; the
    # execution's own time (the close's valuation, then the strategy) is read from its row
    assert figures.orders == 1
    assert figures.execution_s == pytest.approx(exit_execution.duration_ms / 1000)
    assert figures.total_s == pytest.approx(1.0)
    assert figures.recorded_s == pytest.approx(1.5)
    assert figures.finished_s == pytest.approx(2.0)


def test_the_restarted_workers_warm_up_lines_are_read_from_its_log(tmp_path):
    # given a worker whose log has its pool processes' warm-up lines among others
    worker = QueueWorker(queue="bench", env={}, log_dir=tmp_path)
    worker.log_path.write_text(
        "2026-12-04 02:14:10,101 INFO config.celery_app strategy sandbox warmed in 0.42 s: bwrap\n"
        "2026-12-04 02:14:10,200 INFO celery.apps.worker w1@vm ready.\n"
        "2026-12-04 02:14:14,300 INFO config.celery_app exchange pool warmed in 4.10 s: "
        "1000 clients, 200 connections\n"
    )

    # when the bench reads them
    lines = bench_warmups(BenchRun(mode="live", subscribers=1000, tag="t", worker=worker))

    # then it has the warm-up lines, as logged, and nothing else
    assert lines == [
        "strategy sandbox warmed in 0.42 s: bwrap",
        "exchange pool warmed in 4.10 s: 1000 clients, 200 connections",
    ]
