"""A close's strategies in batches of one market: each its own execution, the candles read once."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.celery_app import app
from core.locks import lock_acquire, strategy_run_lock_key
from core.time_utils import datetime_to_ms, format_interval_key
from execution.services import candle_close_dispatch, execution_run, executions_run
from strategies.models import StrategyExecution
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from tests.workers import other_pools_stop
from trades.models import Trade

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
OTHER = "BTC/USDT"


@pytest.fixture(autouse=True)
def no_hand_off(settings):
    """A batch stays whole unless a test says otherwise: a first sandbox start on a loaded
    machine can take longer than the hand-off time."""
    settings.EXECUTION_HANDOFF_S = 60.0


@pytest.fixture
def markets():
    for symbol, price in (("ETH/BTC", 0.05), (OTHER, 0.06)):
        rows = flat_candles(start_ms=datetime_to_ms(START), count=20, price=price)
        load_candles(symbol=symbol, rows=rows)


def _candle_reads(queries: CaptureQueriesContext) -> int:
    return sum('"execution_candle"' in query["sql"] for query in queries.captured_queries)


def test_a_batch_runs_each_strategy_once_on_its_own_lookback_reading_each_market_once(markets):
    # given three strategies of different lookbacks on one market and one on another
    strategies = [StrategyFactory(lookback=n) for n in (3, 5, 8)]
    strategies.append(StrategyFactory(symbol=OTHER, lookback=4))
    for strategy in strategies:
        subscribe(strategy)

    # when a batch runs them all for one close
    with CaptureQueriesContext(connection) as queries:
        outcomes = executions_run(
            strategy_ids=[s.pk for s in strategies],
            interval_start=START + STEP * 10,
            trigger="replay",
        )

    # then each has an execution of its own, on the candles its lookback asks for
    assert [o.outcome for o in outcomes] == ["ran"] * 4
    rows = {row.strategy_id: row for row in StrategyExecution.objects.all()}
    assert [rows[s.pk].candles_used for s in strategies] == [3, 5, 8, 4]
    assert {row.status for row in rows.values()} == {"no_signal"}
    assert len({row.close_price for row in rows.values()}) == 2  # one close per market
    # and each market's candles were read once (has the candle arrived, then the window)
    assert _candle_reads(queries) == 2 * 2


def test_a_batch_keeps_each_executions_fence_and_lock(markets):
    # given a strategy whose candle ran already, one whose lock another worker holds, and a
    # third, all entering a position
    done, held, fresh = (StrategyFactory(settings={"signal": "LONG"}) for _ in range(3))
    for strategy in (done, held, fresh):
        subscribe(strategy)
    interval_start = START + STEP * 10
    execution_run(strategy_id=done.pk, interval_start=interval_start, trigger="replay")
    key = strategy_run_lock_key(
        strategy_id=held.pk, interval_key=format_interval_key(interval_start, "5m")
    )
    assert lock_acquire(key=key, ttl_s=60)

    # when a batch of the three runs that candle
    outcomes = executions_run(
        strategy_ids=[done.pk, held.pk, fresh.pk], interval_start=interval_start, trigger="replay"
    )

    # then the first is a duplicate, the second is left to the lock's holder, the third runs
    assert [o.outcome for o in outcomes] == ["duplicate", "locked", "ran"]
    assert StrategyExecution.objects.filter(strategy=done).count() == 1
    assert not StrategyExecution.objects.filter(strategy=held).exists()
    assert StrategyExecution.objects.get(strategy=fresh).status == "success"


def _queued(queue: str, strategies) -> list[tuple[str, tuple[int, ...]]]:
    """The executions of ``strategies`` waiting on the broker: each task's name and the
    strategies it runs (a message of another test's process may wait there too)."""
    ours = {strategy.pk for strategy in strategies}
    with app.connection_for_read() as broker:
        raw = broker.default_channel.client.lrange(queue, 0, -1)
    tasks = []
    for message in map(json.loads, raw):
        if not message["headers"]["task"].startswith("execution.tasks.execute_"):
            continue  # what subscribing queued
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        ids = kwargs.get("strategy_ids") or [kwargs["strategy_id"]]
        if ours.intersection(ids):
            tasks.append((message["headers"]["task"], tuple(ids)))
    return sorted(tasks)


def test_a_close_queues_each_markets_strategies_in_batches(markets, settings):
    # given five strategies on one market and one on another, about two batches per market,
    # and no worker to take the tasks
    settings.EXECUTION_TARGET_TASKS, settings.EXECUTION_CHUNK_MAX = 2, 25
    other_pools_stop()
    strategies = [*(StrategyFactory() for _ in range(5)), StrategyFactory(symbol=OTHER)]
    for strategy in strategies:
        subscribe(strategy)
    first, second = sorted(s.pk for s in strategies[:5]), strategies[5].pk
    queue = app.conf.task_default_queue

    # when the close is dispatched (beat's way: every market of the resolution)
    try:
        queued = candle_close_dispatch(resolution="5m", close_time=START + STEP * 11)
        tasks = _queued(queue, strategies)
    finally:
        with app.connection_for_write() as broker:
            broker.default_channel.queue_purge(queue)

    # then every strategy is queued once: a market's in batches, a lone one in a task of its own
    assert queued == sorted([*first, second])
    assert tasks == [
        ("execution.tasks.execute_strategies", tuple(first[:3])),
        ("execution.tasks.execute_strategies", tuple(first[3:])),
        ("execution.tasks.execute_strategy", (second,)),
    ]
    assert not Trade.objects.exists()


SPINNING = """
LOOKBACK = 5

def generate_signal(candles, settings):
    while True:
        pass
"""


def test_a_slow_strategy_hands_the_rest_of_its_batch_to_a_task_of_their_own(markets, settings):
    # given a batch whose first strategy spins until its timeout, two more behind it, a short
    # hand-off time and no worker to take tasks
    settings.EXECUTION_HANDOFF_S = 0.3
    other_pools_stop()
    slow = StrategyFactory(code=SPINNING, timeout_s=2.0)
    behind = [StrategyFactory(), StrategyFactory()]
    for strategy in (slow, *behind):
        subscribe(strategy)
    queue = app.conf.task_default_queue

    # when the batch runs
    try:
        outcomes = executions_run(
            strategy_ids=[slow.pk, *(s.pk for s in behind)],
            interval_start=START + STEP * 10,
            trigger="replay",
        )
        tasks = _queued(queue, [slow, *behind])
    finally:
        with app.connection_for_write() as broker:
            broker.default_channel.queue_purge(queue)

    # then it ran the slow one alone (failed at its timeout) and queued the others together
    assert [o.outcome for o in outcomes] == ["ran"]
    assert StrategyExecution.objects.get(strategy=slow).status == "failed"
    assert tasks == [("execution.tasks.execute_strategies", tuple(s.pk for s in behind))]
    assert not StrategyExecution.objects.filter(strategy__in=behind).exists()
