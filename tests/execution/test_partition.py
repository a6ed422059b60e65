"""The engine across several worker hosts, and a host cut off from the network mid-work.

Each host is a network namespace with a veth link (tests/netns.py); its worker reaches the test
PostgreSQL and Redis only over that link. Exactly once must hold across hosts, and when a host is
partitioned in the middle of an execution or of a fan-out, another host takes its work over, and
the partitioned one, once back, finishes what it had started without doubling anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from config.celery_app import app
from core.locks import strategy_run_lock_key
from core.redis_client import get_redis
from core.time_utils import datetime_to_ms, format_interval_key
from execution.tasks import execute_strategy
from strategies.models import Strategy, StrategyExecution
from tests import netns
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from tests.workers import other_pools_stop, wait_for
from tests.workers import test_database_url as database_url
from tooling.processes import worker_env
from trades.models import Trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.netns]

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
# A partitioned host's unacknowledged tasks go back to the queue this soon for the others.
VISIBILITY_TIMEOUT_S = 3
DEFAULT_QUEUE = app.conf.task_default_queue
EXECUTE, FANOUT = "execution.tasks.execute_strategy", "execution.tasks.fanout_orders"
SLOW = """
import time
LOOKBACK = 5

def generate_signal(candles, settings):
    time.sleep(settings.get("sleep", 0))
    return {"signal": "LONG", "price": float(candles["close"].iloc[-1])}
"""


def _unavailable() -> str | None:
    if connection.vendor == "sqlite":
        return "worker hosts need a database server: a SQLite file cannot be shared across hosts"
    if not settings.REDIS_URL.startswith("redis://"):
        return "worker hosts need Redis over TCP (set REDIS_URL)"
    return netns.netns_unavailable()


@pytest.fixture(scope="module")
def hosts(django_db_setup, django_db_blocker) -> Iterator[list[netns.Host]]:
    """Two hosts, each with its link to a forwarder onto the test PostgreSQL and Redis."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    netns.sweep_stale()
    with django_db_blocker.unblock():
        db = connection.settings_dict
    redis = settings.REDIS_URL.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    redis_host, _, redis_port = redis.partition(":")
    subnet = 20 + os.getpid() % 200  # apart from another run's hosts
    made: list[netns.Host] = []
    forwarder = None
    try:
        for index in (1, 2):
            made.append(netns.Host(index=index, subnet=subnet).create())
        routes = [
            (h.address, port, up_host, port)
            for h in made
            for up_host, port in (
                (db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)),
                (redis_host, int(redis_port or 6379)),
            )
        ]
        forwarder = netns.Forwarder(routes).start()
        yield made
    finally:
        if forwarder is not None:
            forwarder.stop()
        for host in made:
            host.delete()


IDLE_QUEUE = "netns-idle"  # a queue nothing is sent to: a worker on it waits to be told


def _start(host: netns.Host, queue: str) -> netns.HostWorker:
    env = worker_env(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=host.url(database_url()),
        REDIS_URL=host.url(settings.REDIS_URL),
        TEST_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
        FANOUT_TARGET_TASKS="1000",  # one subscriber per task: a fan-out spans every host
    )
    worker = netns.HostWorker(
        host=host,
        env=env,
        log_dir=settings.VAR_DIR / "test-workers",
        concurrency=2,
        queues=[queue],
    )
    return worker.start()


@pytest.fixture(scope="module")
def workers(hosts: list[netns.Host]) -> Iterator[tuple[netns.HostWorker, netns.HostWorker]]:
    """A worker on host A taking the default queue, and one on host B waiting on an idle
    queue until a test tells it to take the default queue too."""
    other_pools_stop()  # the shared worker would take the hosts' tasks
    app.control.purge()
    started: list[netns.HostWorker] = []
    try:
        started += [_start(hosts[0], DEFAULT_QUEUE), _start(hosts[1], IDLE_QUEUE)]
        for worker in started:
            worker.wait_ready()
        yield started[0], started[1]
    finally:
        for host in hosts:
            host.heal()
        with ThreadPoolExecutor() as pool:  # their warm shutdowns at once
            list(pool.map(lambda w: w.stop(timeout=10), started))
        app.control.purge()  # what a failed test left queued must not reach later tests


@pytest.fixture(autouse=True)
def _healed(hosts: list[netns.Host]) -> Iterator[None]:
    yield
    for host in hosts:
        host.heal()


def _market() -> list[datetime]:
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=30))
    return [START + STEP * (i + 1) for i in range(30)]


def _strategy(count: int, **strategy_settings: Any) -> Strategy:
    strategy = StrategyFactory(code=SLOW, settings=strategy_settings)
    for _ in range(count):
        subscribe(strategy)
    return strategy


def _execute(strategy: Strategy, close: datetime) -> None:
    execute_strategy.delay(
        strategy_id=strategy.pk, interval_start=(close - STEP).isoformat(), trigger="replay"
    )


def _execution(strategy: Strategy) -> StrategyExecution | None:
    return StrategyExecution.objects.filter(strategy=strategy).first()


def _fanned_out(strategy: Strategy, count: int) -> bool:
    row = _execution(strategy)
    done = row is not None and row.fanout_dispatched_at is not None
    done = done and row.fanout_done >= row.fanout_total == count
    return done and Trade.objects.filter(execution__strategy=strategy).count() == count


def _one_order_each(strategy: Strategy, count: int) -> None:
    """Exactly one execution, and one open entry trade per subscriber."""
    assert StrategyExecution.objects.filter(strategy=strategy).count() == 1
    trades = Trade.objects.filter(execution__strategy=strategy)
    per_subscriber = sorted(trades.values_list("subscription_id", flat=True))
    assert per_subscriber == sorted(strategy.subscriptions.values_list("pk", flat=True))
    assert len(per_subscriber) == count
    assert set(trades.values_list("status", flat=True)) == {Trade.Status.OPEN}


def test_a_fanout_across_hosts_gives_each_subscriber_one_order(workers):
    # given a worker on each of two hosts, and a strategy with 20 subscribers
    closes = _market()
    strategy = _strategy(20)
    for worker in workers:
        worker.consume(DEFAULT_QUEUE)

    # when a candle close's signal fans out, one subscriber per task
    _execute(strategy, closes[10])
    wait_for(lambda: _fanned_out(strategy, 20), timeout=30, what="fan-out")

    # then both hosts placed orders, and each subscriber has exactly one
    _one_order_each(strategy, 20)
    assert all(w.finished_tasks(FANOUT) > 0 for w in workers)


def _lock_expires(strategy: Strategy, close: datetime) -> None:
    """The partitioned host's lock on the candle expires now (its TTL is a minute at least)."""
    interval_key = format_interval_key(close - STEP, strategy.resolution)
    key = strategy_run_lock_key(strategy_id=strategy.pk, interval_key=interval_key)
    assert get_redis().pexpire(key, 1)


def _back_and_done(worker: netns.HostWorker, task: str, before: int) -> None:
    """The healed host has finished the task ``task`` it had in hand (its log counted
    ``before`` of them when it was cut off)."""
    wait_for(lambda: worker.finished_tasks(task) > before, timeout=40, what=f"{task} on the host")


def test_a_host_partitioned_mid_execution_and_mid_fanout_leaves_one_of_each(hosts, workers):
    # given host A's worker alone on the queue, and a strategy that takes 2.5 s to decide,
    # with 6 subscribers
    closes = _market()
    a_host, _ = hosts
    a, b = workers
    b.stop_consuming(DEFAULT_QUEUE)
    slow = _strategy(6, sleep=2.5)

    # when A is cut off from PostgreSQL and Redis while it runs the strategy, its lock expires,
    # and host B takes from the queue
    executed = a.finished_tasks(EXECUTE)
    _execute(slow, closes[10])
    running = wait_for(lambda: _execution(slow), timeout=30, what="the execution on host A")
    a_host.partition()
    assert running.status == StrategyExecution.Status.RUNNING
    _lock_expires(slow, closes[10])
    b.consume(DEFAULT_QUEUE)

    # then B takes the execution over and fans it out while A is away
    wait_for(lambda: _fanned_out(slow, 6), timeout=30, what="host B's take-over")
    taken_over = _execution(slow)
    assert taken_over is not None and taken_over.attempts == 2

    # and once A is back and has finished its run, one execution and one order each remain,
    # as B recorded them
    a_host.heal()
    _back_and_done(a, EXECUTE, executed)
    _one_order_each(slow, 6)
    final = _execution(slow)
    assert final is not None and final.attempts == 2 and final.worker_id == taken_over.worker_id
    assert final.finished_at == taken_over.finished_at

    # given A's worker alone on the queue again, and a strategy with 40 subscribers
    b.stop_consuming(DEFAULT_QUEUE)
    fast = _strategy(40)

    # when A is cut off in the middle of the fan-out, and B takes from the queue
    _execute(fast, closes[11])
    wait_for(
        lambda: Trade.objects.filter(execution__strategy=fast).exists(), timeout=30, what="orders"
    )
    a_host.partition()
    before = Trade.objects.filter(execution__strategy=fast).count()
    assert before < 40, "the fan-out finished before the partition"
    b.consume(DEFAULT_QUEUE)

    # then B places orders while A is away
    wait_for(
        lambda: Trade.objects.filter(execution__strategy=fast).count() > before,
        timeout=30,
        what="host B's orders",
    )

    # and once A is back, every subscriber has exactly one order
    a_host.heal()
    wait_for(lambda: _fanned_out(fast, 40), timeout=40, what="the fan-out")
    _one_order_each(fast, 40)
