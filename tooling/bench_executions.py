"""bench_executions: N strategies on one market, one candle close, a real worker.

Every strategy has one paper subscriber (so it is in the registry) and runs the same 200-candle
moving-average code. The close is dispatched through the production path
(``candle_close_dispatch`` for the market: ``execute_strategies`` tasks, batches of the
market's strategies) to a worker of its own queue; the clock starts just before the dispatch
and stops at the last execution's ``finished_at``.

The sandbox's share is worked out in the same run: after the close, this process runs the same
code on the same candles in the sandbox (warm zygote, the worker's isolation mode) and
``N x that p50 / (pool processes x close → last finished)`` is the share of the pool's time the
sandbox took. Beside it, the executions' own ``duration_ms`` (claim → result recorded) p50.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max, Min

from config.celery_app import app
from core.time_utils import datetime_to_ms
from execution.services import candle_close_dispatch
from execution.tasks import execute_strategy
from markets.candles import candles_closed_window, candles_import
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from strategies.sandbox.runner import run_strategy
from strategies.services import strategy_registry_sync
from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_create
from tooling.live_processes import QueueWorker
from tooling.processes import worker_env
from trades.models import Order, Position, Trade

BENCH_QUEUE = "bench-executions"
EXCHANGE, SYMBOL, WARM_SYMBOL, RESOLUTION = "binance", "BENCHX/BTC", "BENCHW/BTC", "5m"
STEP = timedelta(minutes=5)
START = datetime(2032, 1, 1, tzinfo=UTC)  # a market of its own, far from real data
LOOKBACK = 200
CANDLES = LOOKBACK + 10
CODE = """
LOOKBACK = 200

def generate_signal(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(50).mean()
    if settings.get("signal") != "LONG" or not fast.iloc[-1] > slow.iloc[-1]:
        return None
    return {"signal": "LONG", "price": float(close.iloc[-1])}
"""


@dataclass
class Figures:
    strategies: int
    concurrency: int
    dispatch_s: float  # close → every task queued
    first_start_s: float  # close → first execution claimed
    last_finished_s: float  # close → last execution finished
    duration_p50_ms: float  # one execution, claim → result recorded
    statuses: dict[str, int]

    @property
    def per_second(self) -> float:
        return self.strategies / self.last_finished_s if self.last_finished_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"close → last execution finished {self.last_finished_s:.3f} s: "
            f"{self.per_second:.1f} executions/s (goal >= 100/s at 1,000 on 2 cores); "
            f"dispatch {self.dispatch_s:.3f} s, first start {self.first_start_s:.3f} s; "
            f"per execution (claim → recorded) p50 {self.duration_p50_ms:.1f} ms; "
            f"statuses {self.statuses}"
        )


@dataclass
class BenchRun:
    strategies: int
    concurrency: int
    signal: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    strategy_ids: list[int] = field(default_factory=list)
    warm_id: int | None = None
    worker: QueueWorker | None = None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def _log_dir() -> Path:
    return settings.VAR_DIR / "bench"


def bench_start(*, strategies: int, concurrency: int, signal: str) -> BenchRun:
    """The markets, the worker (its own queue), the strategies and their subscribers."""
    run = BenchRun(strategies=strategies, concurrency=concurrency, signal=signal)
    # Every task of this process goes to the bench queue, so no other worker takes them.
    app.conf.task_routes = {"*": {"queue": BENCH_QUEUE}}
    for symbol in (SYMBOL, WARM_SYMBOL):
        _load_market(symbol)
    env = worker_env(FANOUT_QUEUE=BENCH_QUEUE)
    run.worker = QueueWorker(
        queue=BENCH_QUEUE, env=env, log_dir=_log_dir(), concurrency=concurrency
    ).start()
    # Ready means the worker has rebuilt the registry (at start): the strategies come after.
    run.worker.wait_ready()
    _create_strategies(run)
    return run


def _load_market(symbol: str) -> None:
    rows = []
    for i in range(CANDLES + 4):
        price = 0.05 * (1 + 0.01 * ((i * 7) % 13 - 6) / 6)
        rows.append([datetime_to_ms(START + STEP * i), price, price, price, price, 100.0])
    candles_import(exchange=EXCHANGE, symbol=symbol, resolution=RESOLUTION, rows=rows)


def _create_strategies(run: BenchRun) -> None:
    """Strategies written in bulk (a deploy's dry run per strategy is not what is measured),
    subscribed through the service so the registry holds them as in production."""
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"bench-x-{run.tag}-{i}") for i in range(run.strategies + 1)]
    )
    owner, subscribers = users[0], users[1:]
    rows = [
        _strategy_row(owner, f"bench x {run.tag} {i}", SYMBOL, run.signal)
        for i in range(run.strategies)
    ]
    warm = _strategy_row(owner, f"bench x {run.tag} warm-up", WARM_SYMBOL, "HOLD")
    created = Strategy.objects.bulk_create([*rows, warm])
    StrategyVersion.objects.bulk_create(
        [StrategyVersion(strategy=s, version=1, code=CODE, lookback=LOOKBACK) for s in created]
    )
    for strategy, user in zip(created, [*subscribers, owner], strict=True):
        subscription_create(
            user=user, strategy=strategy, capital=Decimal("1"), risk_per_trade=Decimal("0.01")
        )
    run.strategy_ids = [s.pk for s in created[:-1]]
    run.warm_id = created[-1].pk


def _strategy_row(owner: Any, name: str, symbol: str, signal: str) -> Strategy:
    return Strategy(
        owner=owner,
        name=name,
        code=CODE,
        lookback=LOOKBACK,
        timeout_s=30.0,
        exchange=EXCHANGE,
        symbol=symbol,
        resolution=RESOLUTION,
        settings={"signal": signal},
    )


def bench_warm_up(run: BenchRun, *, timeout: float = 120) -> None:
    """Start every pool process's sandbox zygote, as earlier closes would have: the warm-up
    strategy runs on as many past closes as the pool has processes, twice over."""
    assert run.warm_id is not None
    closes = [START + STEP * (LOOKBACK + 1 + i) for i in range(2 * run.concurrency)]
    for close in closes:
        execute_strategy.apply_async(
            kwargs={
                "strategy_id": run.warm_id,
                "interval_start": (close - STEP).isoformat(),
                "trigger": "replay",
            }
        )
    _wait_final(strategy_ids=[run.warm_id], expected=len(closes), close=None, timeout=timeout)


def bench_close(run: BenchRun, *, timeout: float = 600) -> Figures:
    """One close of the market: every strategy executed once; timed from the dispatch."""
    close = START + STEP * CANDLES
    started = datetime.now(UTC)
    queued = candle_close_dispatch(
        resolution=RESOLUTION, close_time=close, trigger="replay", exchange=EXCHANGE, symbol=SYMBOL
    )
    dispatched = datetime.now(UTC)
    if len(queued) != run.strategies:
        raise RuntimeError(f"the registry holds {len(queued)} strategies, not {run.strategies}")
    _wait_final(
        strategy_ids=run.strategy_ids, expected=run.strategies, close=close, timeout=timeout
    )
    rows = StrategyExecution.objects.filter(strategy_id__in=run.strategy_ids, interval_end=close)
    span = rows.aggregate(first=Min("started_at"), last=Max("finished_at"))
    statuses: dict[str, int] = {}
    for status in rows.values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    durations = [d for d in rows.values_list("duration_ms", flat=True) if d is not None]
    return Figures(
        strategies=run.strategies,
        concurrency=run.concurrency,
        dispatch_s=(dispatched - started).total_seconds(),
        first_start_s=(span["first"] - started).total_seconds(),
        last_finished_s=(span["last"] - started).total_seconds(),
        duration_p50_ms=statistics.median(durations) if durations else 0.0,
        statuses=statuses,
    )


def _wait_final(
    *, strategy_ids: list[int], expected: int, close: datetime | None, timeout: float
) -> None:
    rows = StrategyExecution.objects.filter(strategy_id__in=strategy_ids)
    if close is not None:
        rows = rows.filter(interval_end=close)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rows.exclude(status=StrategyExecution.Status.RUNNING).count() >= expected:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the executions did not all finish within {timeout} s")


def bench_sandbox_p50_ms(*, runs: int = 30) -> tuple[float, str]:
    """The sandbox's wall time for the benchmark's code and candles, warm, in this process."""
    close = START + STEP * CANDLES
    candles = candles_closed_window(
        exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION, close_time=close, limit=LOOKBACK
    )
    walls: list[float] = []
    isolation = ""
    for _ in range(runs + 1):  # the first one starts the zygote
        begun = time.perf_counter()
        result = run_strategy(
            code=CODE,
            candles=candles,
            settings={"signal": "HOLD"},
            timeout_s=30.0,
            memory_mb=settings.STRATEGY_MEMORY_MB,
            lookback=LOOKBACK,
            require_isolation=settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
            isolation_mode=settings.STRATEGY_SANDBOX_ISOLATION,
        )
        walls.append((time.perf_counter() - begun) * 1000)
        if not result.ok:
            raise RuntimeError(f"the sandbox run failed: {result.error}")
        isolation = result.isolation
    return statistics.median(walls[1:]), isolation


def bench_stop(run: BenchRun, *, keep: bool) -> None:
    if run.worker is not None:
        run.worker.stop()
    if not keep:
        _delete(run)


def _delete(run: BenchRun) -> None:
    """Remove what the run created (the bench markets' candles stay for the next run)."""
    ids = [*run.strategy_ids, *([run.warm_id] if run.warm_id else [])]
    strategies = Strategy.objects.filter(pk__in=ids)
    strategies.update(status=Strategy.Status.RETIRED, subscriber_count=0)
    for strategy_id in ids:
        strategy_registry_sync(strategy_id=strategy_id)
    subscriptions = StrategySubscription.objects.filter(strategy_id__in=ids)
    users = {*subscriptions.values_list("user_id", flat=True)}
    users |= {*strategies.values_list("owner_id", flat=True)}
    Order.objects.filter(subscription__in=subscriptions).delete()
    Trade.objects.filter(subscription__in=subscriptions).delete()
    Position.objects.filter(subscription__in=subscriptions).delete()
    subscriptions.delete()
    StrategyExecution.objects.filter(strategy_id__in=ids).delete()
    StrategyVersion.objects.filter(strategy_id__in=ids).delete()
    strategies.delete()
    get_user_model().objects.filter(pk__in=users).delete()
