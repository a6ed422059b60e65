"""bench_fanout: one signal through the real fan-out, timed from the signal to the last order.

Real worker processes, database and Redis; for ``live``, the unmodified ccxt client against the
exchange simulator, and in the same run the *bare-ccxt floor*: the same number of orders sent
from this process by one async ccxt instance at concurrency 50, against the same simulator.

Timeline of one fan-out, all read back from the database:
signal = the execution's ``finished_at`` (the signal is recorded, the fan-out is dispatched);
each subscriber's delay = its order's ``acknowledged_at`` (the exchange's answer, or the paper
fill) minus the signal; the last trade recorded = the latest ``Trade.updated_at`` of the trades
it opened or closed; the last batch finished = the execution's ``last_order_at``, which each
batch writes once it is done (its positions and equity points included).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import ccxt.async_support as ccxt_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Max, Min, Q

from core.time_utils import datetime_to_ms
from execution.services import _fanout_chunk_size
from execution.tasks import execute_strategy
from markets.candles import candles_import
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from strategies.services import strategy_create, strategy_registry_sync, strategy_update_settings
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import credential_create, subscription_create
from tooling.live_processes import QueueWorker, simulator_start
from tooling.processes import ManageProcess, worker_env
from tooling.simulator.client import SimulatorClient
from trades.brokers.hub import _rebase_urls
from trades.models import Order, Position, Trade

BENCH_QUEUE = "bench-fanout"
EXCHANGE, SYMBOL, RESOLUTION = "binance", "BENCH/BTC", "5m"
STEP = timedelta(minutes=5)
START = datetime(2031, 1, 1, tzinfo=UTC)  # a market of its own, far from real data
PRICE = Decimal("0.05")
FLOOR_CONCURRENCY = 50
CODE = """
LOOKBACK = 5

def generate_signal(candles, settings):
    kind = settings.get("signal", "HOLD")
    if kind == "HOLD":
        return None
    return {"signal": kind, "price": float(candles["close"].iloc[-1])}
"""


@dataclass
class Figures:
    """One fan-out, from the signal to the last order."""

    orders: int
    failed: int
    total_s: float  # signal → last order acknowledged
    recorded_s: float  # signal → last trade recorded
    dispatch_s: float  # signal → fan-out tasks queued
    first_s: float  # signal → first order acknowledged
    p50_s: float
    p99_s: float
    # The execution itself, before the signal: the candle-close check (stops, the holders'
    # positions valued at the close, their equity and drawdown), then the strategy.
    execution_s: float = 0.0
    # signal → the last fan-out batch finished (positions, equity points and all).
    finished_s: float = 0.0
    # Each fan-out task's first trade written (about when it started; a paper batch writes its
    # trades once their fills are decided, so after its first acknowledgement), first and last
    # order acknowledged (its subscribers in id order, cut as the dispatch cuts them): batches
    # side by side on the pool processes overlap, batches one after the other do not.
    batches: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.orders / self.total_s if self.total_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"signal → last order acknowledged {self.total_s:.3f} s "
            f"(last trade recorded {self.recorded_s:.3f} s, last batch finished "
            f"{self.finished_s:.3f} s); per-subscriber delay "
            f"p50 {self.p50_s:.3f} s, p99 {self.p99_s:.3f} s; first order {self.first_s:.3f} s; "
            f"dispatch {self.dispatch_s:.3f} s; {self.per_second:.0f} orders/s; "
            f"execution before the signal {self.execution_s:.3f} s; "
            f"{self.orders} orders, {self.failed} not filled"
        )

    def batches_line(self) -> str:
        spans = ", ".join(
            f"{start:.3f}/{first:.3f}-{last:.3f}" for start, first, last in self.batches
        )
        return (
            f"{len(self.batches)} batches, first intent/first-last order acknowledged (s): {spans}"
        )


@dataclass
class BenchRun:
    mode: str
    subscribers: int
    tag: str
    strategy: Strategy | None = None
    sim: SimulatorClient | None = None
    processes: list[ManageProcess | QueueWorker] = field(default_factory=list)
    worker: QueueWorker | None = None
    accounts: dict[str, str] = field(default_factory=dict)  # api key -> secret
    closes: list[datetime] = field(default_factory=list)


def _log_dir() -> Path:
    return settings.VAR_DIR / "bench"


def bench_start(
    *, mode: str, subscribers: int, latency_ms: float, concurrency: int, port: int
) -> BenchRun:
    """The market, the simulator (live), the worker, the strategy and its subscribers."""
    run = BenchRun(mode=mode, subscribers=subscribers, tag=uuid.uuid4().hex[:8])
    env = worker_env(FANOUT_QUEUE=BENCH_QUEUE)
    run.closes = _load_market()
    if mode == "live":
        url = f"http://127.0.0.1:{port}"
        env["EXCHANGE_URL_OVERRIDES"] = f"{EXCHANGE}={url}"
        settings.EXCHANGE_URL_OVERRIDES = {**settings.EXCHANGE_URL_OVERRIDES, EXCHANGE: url}
        run.processes.append(
            simulator_start(
                port=port,
                env=env,
                log_path=_log_dir() / f"simulator-{port}.log",
                args=(f"--latency-ms={latency_ms}",),
            )
        )
        run.sim = SimulatorClient(url)
    run.worker = QueueWorker(
        queue=BENCH_QUEUE, env=env, log_dir=_log_dir(), concurrency=concurrency
    ).start()
    # The strategy's dry run goes to this worker too, so it must be listening first.
    settings.STRATEGY_DRY_RUN_QUEUE = BENCH_QUEUE
    run.worker.wait_ready()
    _create_subscribers(run)
    return run


def bench_restart(run: BenchRun, *, settle_s: float) -> None:
    """Replace the worker by a new one, as a deploy does (Procfile, compose), with its pools
    and sandboxes warmed at start (EXCHANGE_POOL_WARM, STRATEGY_SANDBOX_WARM); the next signal
    comes ``settle_s`` after it is listening."""
    assert run.worker is not None
    run.worker.stop()
    env = {**run.worker.env, "EXCHANGE_POOL_WARM": "1", "STRATEGY_SANDBOX_WARM": "1"}
    # At INFO, as the Procfile's worker: its log says what each process's warm-up did.
    run.worker = QueueWorker(
        queue=BENCH_QUEUE,
        env=env,
        log_dir=_log_dir(),
        concurrency=run.worker.concurrency,
        loglevel="INFO",
    ).start()
    run.worker.wait_ready()
    time.sleep(settle_s)


def bench_warmups(run: BenchRun) -> list[str]:
    """The worker's warm-up lines (one per pool process and warm-up), as it logged them."""
    assert run.worker is not None
    return [
        line.split(" config.celery_app ", 1)[-1]
        for line in run.worker.log_text().splitlines()
        if " config.celery_app " in line and "warm" in line
    ]


def _load_market() -> list[datetime]:
    rows = []
    for i in range(12):
        price = float(PRICE) * (1 + i * 0.0005)
        rows.append([datetime_to_ms(START + STEP * i), price, price, price, price, 100.0])
    candles_import(exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION, rows=rows)
    return [START + STEP * (i + 1) for i in range(12)]


def _create_subscribers(run: BenchRun) -> None:
    user_model = get_user_model()
    author, _ = user_model.objects.get_or_create(username=f"bench-author-{run.tag}")
    run.strategy = strategy_create(
        owner=author,
        name=f"bench fan-out {run.tag}",
        code=CODE,
        exchange=EXCHANGE,
        symbol=SYMBOL,
        resolution=RESOLUTION,
        settings={"signal": "HOLD"},
    )
    users = user_model.objects.bulk_create(
        [user_model(username=f"bench-{run.tag}-{i}") for i in range(run.subscribers)]
    )
    accounts = []
    for user in users:
        credential = None
        if run.mode == "live":
            api_key, secret = f"bench-{uuid.uuid4().hex[:20]}", uuid.uuid4().hex
            run.accounts[api_key] = secret
            accounts.append({"api_key": api_key, "secret": secret, "balances": {"BTC": "10"}})
            credential = credential_create(
                user=user, exchange=EXCHANGE, label="bench", api_key=api_key, secret=secret
            )
        subscription_create(
            user=user,
            strategy=run.strategy,
            capital=Decimal("1"),
            risk_per_trade=Decimal("0.01"),
            mode=run.mode,
            credential=credential,
        )
    if run.sim is not None:
        run.sim.accounts(accounts)
        run.sim.refresh()


def bench_signal(run: BenchRun, *, kind: str, close: datetime, timeout: float = 300) -> int:
    """Fire one candle close with ``kind`` through the worker; wait for every order."""
    assert run.strategy is not None
    strategy_update_settings(strategy=run.strategy, settings={"signal": kind})
    if run.sim is not None:
        run.sim.clock(close)  # the simulator trades at the candle that just closed
    execute_strategy.apply_async(
        kwargs={
            "strategy_id": run.strategy.pk,
            "interval_start": (close - STEP).isoformat(),
            "trigger": "replay",
        },
        queue=BENCH_QUEUE,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = (
            StrategyExecution.objects.filter(strategy=run.strategy, interval_end=close)
            .values("pk", "status", "error", "fanout_total", "fanout_done")
            .first()
        )
        if row and row["status"] not in ("running", "success"):
            raise RuntimeError(f"the execution ended {row['status']}: {row['error']}")
        if row and row["status"] == "success" and 0 < row["fanout_total"] <= row["fanout_done"]:
            return int(row["pk"])
        time.sleep(0.05)
    raise TimeoutError(f"the fan-out did not finish within {timeout} s")


def bench_figures(execution_id: int) -> Figures:
    execution = StrategyExecution.objects.get(pk=execution_id)
    signal, dispatched = execution.finished_at, execution.fanout_dispatched_at
    assert signal is not None and dispatched is not None
    orders = Order.objects.filter(execution_id=execution_id)
    rows = [
        ((ack - signal).total_seconds(), (created - signal).total_seconds())
        for ack, created in orders.order_by("subscription_id").values_list(
            "acknowledged_at", "trade__created_at"
        )
        if ack is not None
    ]
    acks = sorted(ack for ack, _ in rows)
    size = _fanout_chunk_size(len(rows))
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    # An entry's trades carry the execution; a close's carry it as their exit execution.
    trades = Trade.objects.filter(Q(execution_id=execution_id) | Q(exit_execution_id=execution_id))
    recorded = trades.aggregate(last=Max("updated_at"))["last"] or signal
    first = orders.aggregate(first=Min("acknowledged_at"))["first"] or signal
    return Figures(
        orders=orders.count(),
        failed=orders.exclude(status=Order.Status.FILLED).count(),
        total_s=acks[-1] if acks else 0.0,
        recorded_s=(recorded - signal).total_seconds(),
        dispatch_s=(dispatched - signal).total_seconds(),
        first_s=(first - signal).total_seconds(),
        p50_s=statistics.median(acks) if acks else 0.0,
        p99_s=acks[min(len(acks) - 1, int(len(acks) * 0.99))] if acks else 0.0,
        execution_s=(execution.duration_ms or 0.0) / 1000,
        finished_s=((execution.last_order_at or signal) - signal).total_seconds(),
        batches=[
            (min(c for _, c in chunk), min(a for a, _ in chunk), max(a for a, _ in chunk))
            for chunk in chunks
        ],
    )


def bench_floor(run: BenchRun, *, orders: int) -> float:
    """The same number of orders from this process, one async ccxt instance, concurrency 50."""
    assert run.sim is not None
    api_key, secret = f"floor-{run.tag}", uuid.uuid4().hex
    run.sim.account(api_key, secret, {"BTC": str(orders)})
    return asyncio.run(_floor(run.sim.url, api_key, secret, orders))


async def _floor(url: str, api_key: str, secret: str, orders: int) -> float:
    exchange = ccxt_async.binance(
        {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchMargins": False,
                "fetchCurrencies": False,
            },
        }
    )
    exchange.urls["api"] = _rebase_urls(exchange.urls["api"], url)
    try:
        await exchange.load_markets()
        amount = float(Decimal("0.01") / PRICE)
        await exchange.create_order(SYMBOL, "market", "buy", amount)  # opens the connection
        semaphore = asyncio.Semaphore(FLOOR_CONCURRENCY)

        async def one() -> None:
            async with semaphore:
                await exchange.create_order(SYMBOL, "market", "buy", amount)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(orders)))
        return time.perf_counter() - started
    finally:
        await exchange.close()


def bench_stop(run: BenchRun, *, keep: bool) -> None:
    if run.worker is not None:
        run.worker.stop()
    for process in reversed(run.processes):
        process.stop()
    if run.strategy is not None and not keep:
        _delete(run)


def _delete(run: BenchRun) -> None:
    """Remove everything the run created (the bench market's candles stay for the next run)."""
    assert run.strategy is not None
    strategy_id = run.strategy.pk
    Strategy.objects.filter(pk=strategy_id).update(
        status=Strategy.Status.RETIRED, subscriber_count=0
    )
    strategy_registry_sync(strategy_id=strategy_id)
    subscriptions = StrategySubscription.objects.filter(strategy_id=strategy_id)
    Order.objects.filter(subscription__in=subscriptions).delete()
    Trade.objects.filter(subscription__in=subscriptions).delete()
    Position.objects.filter(subscription__in=subscriptions).delete()
    credentials = list(subscriptions.values_list("credential_id", flat=True))
    users = list(subscriptions.values_list("user_id", flat=True))
    subscriptions.delete()
    BrokerCredential.objects.filter(pk__in=[c for c in credentials if c]).delete()
    StrategyExecution.objects.filter(strategy_id=strategy_id).delete()
    StrategyVersion.objects.filter(strategy_id=strategy_id).delete()
    owner = run.strategy.owner_id
    Strategy.objects.filter(pk=strategy_id).delete()
    get_user_model().objects.filter(pk__in=[*users, owner]).delete()
