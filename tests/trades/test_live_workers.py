"""Live fan-out on real Celery worker processes, through ccxt, against the simulator."""

from __future__ import annotations

from collections import Counter

import pytest

from execution.services import execution_run
from strategies.models import StrategyExecution
from tests.factories import StrategyFactory
from tests.trades.conftest import STEP
from tests.trades.live import live_trader, live_worker
from tests.workers import wait_for
from trades.models import Order, Trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _fanned_out(execution_id: int, count: int) -> bool:
    row = StrategyExecution.objects.get(pk=execution_id)
    done = row.fanout_dispatched_at is not None and row.fanout_done >= row.fanout_total
    return done and Trade.objects.filter(execution_id=execution_id, status="open").count() == count


def test_worker_killed_mid_fanout_every_subscriber_ends_with_exactly_one_order(
    sim, market, settings
):
    # given 40 live subscribers in batches of 5, an exchange answering each order after 300 ms,
    # and a worker
    settings.FANOUT_TARGET_TASKS = 8
    strategy = StrategyFactory(settings={"signal": "LONG"})
    traders = [live_trader(sim, strategy) for _ in range(40)]
    sim.faults(latency_ms=300)
    sim.clock(market[10])
    worker = live_worker(sim.url).start().wait_ready()
    try:
        # when the fan-out starts and the worker is SIGKILLed while orders are in flight
        outcome = execution_run(
            strategy_id=strategy.pk, interval_start=market[10] - STEP, trigger="replay"
        )
        wait_for(lambda: sim.stats().get("order_create", 0) > 0, timeout=60, what="orders")
        worker.kill()
        assert len(sim.orders()) < 40, "the fan-out finished before the kill"

        # and a new worker starts (the killed one's tasks come back after the visibility timeout)
        worker = live_worker(sim.url).start().wait_ready()
        wait_for(lambda: _fanned_out(outcome.execution_id, 40), timeout=120, what="fan-out")
    finally:
        worker.stop()

    # then every subscriber has exactly one order on the exchange, on its own account, filled
    per_key = Counter(o["api_key"] for o in sim.orders())
    assert per_key == Counter({t.api_key: 1 for t in traders})
    assert Order.objects.filter(execution_id=outcome.execution_id, status="filled").count() == 40
    retried = Order.objects.filter(execution_id=outcome.execution_id, attempts__gt=1).count()
    assert retried > 0  # some orders were claimed by the killed worker and taken over
