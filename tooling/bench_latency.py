"""Close-to-execution latency, measured on a replayed market (``manage.py bench_latency``).

The exchange simulator replays real candles on a fast clock and streams them over WebSocket;
a real worker runs the strategy and fans out to paper subscribers. For each candle close we read
back from the database: close → data available, close → execution start, close → last order,
all in real milliseconds. ``stream`` runs the candle streamer; ``beat`` fires the candle-close
task at each boundary as django-celery-beat would (no streamer: the execution fetches the
candle over REST, waiting for it to settle).
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.test import override_settings

from core.clock import market_now, market_to_real
from core.time_utils import compute_next_candle_close, ms_to_datetime
from execution.tasks import candle_close
from markets.models import Candle
from strategies.models import Strategy, StrategyExecution
from strategies.services import strategy_create
from subscriptions.services import strategy_retire, subscription_create
from tooling.processes import ManageProcess, WorkerProcess, worker_env
from tooling.replay import ReplayMarket, replay_log_dir, replay_rows

SYMBOL, RESOLUTION, STEP = "ETH/BTC", "5m", timedelta(minutes=5)

# Alternates entry and exit on every close, so every close places orders.
FLIP = """
LOOKBACK = 3


def generate_signal(candles, settings):
    price = float(candles["close"].iloc[-1])
    if (int(candles["timestamp"].iloc[-1].timestamp()) // 300) % 2 == 0:
        return {"signal": "LONG", "price": price, "stopLoss": price * 0.9}
    return {"signal": "EXIT_LONG", "price": price}
"""


@dataclass
class LatencyReport:
    source: str
    closes: int
    to_start_ms: list[float]
    to_data_ms: list[float]
    to_last_order_ms: list[float]

    def lines(self) -> list[str]:
        return [
            f"{self.source}: {self.closes} closes, {len(self.to_start_ms)} executions",
            f"  close -> data available  {_p(self.to_data_ms)}",
            f"  close -> execution start {_p(self.to_start_ms)}",
            f"  close -> last order      {_p(self.to_last_order_ms)}",
        ]


def _p(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):7.1f} ms  p99 {p99:7.1f} ms  (n={len(ordered)})"


def bench_latency_run(*, source: str, closes: int, speed: float, subscribers: int) -> LatencyReport:
    rows = replay_rows(symbol=SYMBOL, resolution=RESOLUTION)
    market = ReplayMarket(
        start=ms_to_datetime(int(rows[200][0])), speed=speed, source=f"bench-{uuid.uuid4().hex[:6]}"
    )
    # Candles streamed by an earlier run would look like history: start clean after ``start``.
    Candle.objects.filter(
        exchange=market.exchange, symbol=SYMBOL, open_time__gte=market.start
    ).delete()
    market.load(rows=rows, symbol=SYMBOL, resolution=RESOLUTION)
    env = market.process_env(worker_env())
    processes: list[ManageProcess] = []
    worker = WorkerProcess(env=env, log_dir=replay_log_dir(), concurrency=2)
    strategy = None
    try:
        with override_settings(**market.settings_overrides()):
            market.start_simulator(env=env, log_dir=replay_log_dir())
            worker.start().wait_ready()
            strategy = _strategy(subscribers=subscribers)
            if source == "stream":
                log = replay_log_dir() / f"bench-streamer-{market.port}.log"
                processes.append(ManageProcess(["stream_candles"], env=env, log_path=log).start())
                processes[-1].wait_for_log("candle streamer running")
            window = _drive(source=source, closes=closes, strategy=strategy)
            return _report(source, strategy, window)
    finally:
        for process in processes:
            process.stop()
        worker.stop()
        market.stop()
        if strategy is not None:
            strategy_retire(strategy=strategy)


def _strategy(*, subscribers: int) -> Strategy:
    user_model = get_user_model()
    author, _ = user_model.objects.get_or_create(username="bench-author")
    strategy = strategy_create(
        owner=author,
        name=f"latency bench {uuid.uuid4().hex[:6]}",
        code=FLIP,
        exchange="binance",
        symbol=SYMBOL,
        resolution=RESOLUTION,
        settings={},
    )
    for i in range(subscribers):
        user, _ = user_model.objects.get_or_create(username=f"bench-sub-{i}")
        subscription_create(
            user=user,
            strategy=strategy,
            mode="paper",
            capital=Decimal("1"),
            risk_per_trade=Decimal("0.01"),
            leverage=Decimal("1"),
        )
    return strategy


def _drive(*, source: str, closes: int, strategy: Strategy) -> tuple[datetime, datetime]:
    """Let ``closes`` candles close (beat: fire the task at each boundary); the closes' window."""
    first = compute_next_candle_close(market_now(), RESOLUTION) + STEP  # after warm-up
    last = first + STEP * (closes - 1)
    boundary = compute_next_candle_close(market_now(), RESOLUTION)
    while boundary <= last:
        _sleep_until(boundary)
        if source == "beat":
            candle_close.delay(
                resolution=RESOLUTION, close_time=boundary.isoformat(), trigger="beat"
            )
        boundary += STEP
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pending = StrategyExecution.objects.filter(
            strategy=strategy, interval_end__gte=first, interval_end__lte=last
        )
        if pending.count() == closes and not pending.filter(status="running").exists():
            break
        time.sleep(0.2)
    time.sleep(2)  # let the last fan-out record its orders
    return first, last


def _sleep_until(market_time: datetime) -> None:
    delay = (market_to_real(market_time) - market_to_real(market_now())).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _report(source: str, strategy: Strategy, window: tuple[datetime, datetime]) -> LatencyReport:
    first, last = window
    executions = StrategyExecution.objects.filter(
        strategy=strategy, interval_end__gte=first, interval_end__lte=last
    )
    start, data, orders = [], [], []
    for e in executions:
        close = market_to_real(e.interval_end)
        start.append((e.started_at - close).total_seconds() * 1000)
        if e.data_available_at:
            data.append((e.data_available_at - close).total_seconds() * 1000)
        if e.last_order_at:
            orders.append((e.last_order_at - close).total_seconds() * 1000)
    closes = int((last - first) / STEP) + 1
    return LatencyReport(source, closes, start, data, orders)
