"""The live-mode demo: live subscribers trading through ccxt against the exchange simulator.

A real worker process replays candle closes through the real ``execute_strategy`` task; each
subscriber's orders are signed with its own keys and sent by the unmodified ccxt client to the
simulator, which injects faults (5xx, 429/418, answers lost after the order was accepted).
The report compares the platform's records with the orders the simulator holds.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model

from core.time_utils import resolution_to_timedelta
from execution.tasks import execute_strategy
from markets.market_data import market_data_load
from markets.models import Candle
from strategies.models import Strategy, StrategyExecution
from strategies.selectors import execution_settled
from strategies.services import strategy_create
from subscriptions.models import StrategySubscription
from subscriptions.services import (
    credential_create,
    strategy_retire,
    subscription_cancel,
    subscription_create,
)
from tooling.demo import SMA_CROSSOVER
from tooling.live_processes import QueueWorker, free_port, simulator_start
from tooling.processes import ManageProcess, worker_env
from tooling.simulator.client import SimulatorClient
from trades.models import Order, Position, Trade
from trades.tasks import orders_sync_open

DEMO_QUEUE = "demo-live"
EXCHANGE, SYMBOL, RESOLUTION = "binance", "ETH/BTC", "5m"
AUTHOR = "demo-live-author"
SUBSCRIBERS = (  # capital (BTC), risk per trade, leverage, BTC on the exchange
    ("0.5", "0.01", "1", "1"),
    ("2", "0.02", "2", "5"),
    ("10", "0.005", "3", "20"),
)
# Each request to the simulator draws one: 5xx, 429 (every fifth a 418), an answer lost after
# the order was accepted.
FAULTS = {"fail_rate": 0.1, "rate_limit_rate": 0.1, "timeout_after_accept_rate": 0.1}
# Short client timeouts so that answers held back by the simulator are given up on quickly.
WORKER_ENV = {
    "EXCHANGE_TIMEOUT_MS": "1500",
    "EXCHANGE_RETRY_BACKOFF_S": "0.1",
    "EXCHANGE_ORDER_RETRIES": "4",
    "ORDER_SEND_LEASE_S": "15",
}


@dataclass
class LiveDemo:
    started: float = field(default_factory=time.monotonic)
    source: str = ""
    strategy: Strategy | None = None
    subscriptions: list[StrategySubscription] = field(default_factory=list)
    keys: dict[int, str] = field(default_factory=dict)  # subscription id -> api key
    closes: list[datetime] = field(default_factory=list)
    sim: SimulatorClient | None = None
    processes: list[ManageProcess | QueueWorker] = field(default_factory=list)


def live_demo_start(*, closes: int) -> LiveDemo:
    demo = LiveDemo()
    demo.source = market_data_load(
        exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION, count=closes + 200
    ).source
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = worker_env(
        EXCHANGE_URL_OVERRIDES=f"{EXCHANGE}={url}", FANOUT_QUEUE=DEMO_QUEUE, **WORKER_ENV
    )
    log_dir = settings.VAR_DIR / "demo-live"
    hold = f"--hold-s={float(WORKER_ENV['EXCHANGE_TIMEOUT_MS']) / 1000 + 1.5}"
    demo.processes.append(
        simulator_start(port=port, env=env, log_path=log_dir / "simulator.log", args=(hold,))
    )
    demo.sim = SimulatorClient(url)
    worker = QueueWorker(queue=DEMO_QUEUE, env=env, log_dir=log_dir).start()
    demo.processes.append(worker)
    # The strategy's dry run goes to this worker too, so it must be listening first.
    settings.STRATEGY_DRY_RUN_QUEUE = DEMO_QUEUE
    worker.wait_ready()
    _deploy(demo, closes)
    demo.sim.faults(**FAULTS)
    return demo


def _deploy(demo: LiveDemo, closes: int) -> None:
    assert demo.sim is not None
    author, _ = get_user_model().objects.get_or_create(username=AUTHOR)
    for old in Strategy.objects.filter(owner=author).exclude(status=Strategy.Status.RETIRED):
        strategy_retire(strategy=old)  # a crashed earlier run must not trade along
    strategy = strategy_create(
        owner=author,
        name=f"SMA crossover, live {time.strftime('%Y-%m-%d %H:%M:%S')}",
        code=SMA_CROSSOVER,
        exchange=EXCHANGE,
        symbol=SYMBOL,
        resolution=RESOLUTION,
        settings={"fast": 9, "slow": 21, "stop_pct": 0.01, "target_pct": 0.02},
    )
    demo.strategy = strategy
    for index, (capital, risk, leverage, balance) in enumerate(SUBSCRIBERS, start=1):
        user, _ = get_user_model().objects.get_or_create(
            username=f"demo-live-{index}-{strategy.pk}"
        )
        api_key, secret = f"demo-{uuid.uuid4().hex[:24]}", uuid.uuid4().hex
        demo.sim.account(api_key, secret, {"BTC": balance})
        credential = credential_create(
            user=user, exchange=EXCHANGE, label="simulator", api_key=api_key, secret=secret
        )
        subscription = subscription_create(
            user=user,
            strategy=strategy,
            capital=Decimal(capital),
            risk_per_trade=Decimal(risk),
            leverage=Decimal(leverage),
            mode=StrategySubscription.Mode.LIVE,
            credential=credential,
        )
        demo.subscriptions.append(subscription)
        demo.keys[subscription.pk] = api_key
    opens = list(
        Candle.objects.filter(exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION)
        .order_by("open_time")
        .values_list("open_time", flat=True)[strategy.lookback : strategy.lookback + closes]
    )
    step = resolution_to_timedelta(RESOLUTION)
    demo.closes = [open_time + step for open_time in opens]
    demo.sim.refresh()


def live_demo_replay(demo: LiveDemo, *, timeout_per_close: float = 120.0) -> None:
    """Each close in turn: the simulator's clock moves to it, then the execution runs."""
    assert demo.sim is not None and demo.strategy is not None
    step = resolution_to_timedelta(RESOLUTION)
    for index, close in enumerate(demo.closes, start=1):
        demo.sim.clock(close)
        execute_strategy.apply_async(
            kwargs={
                "strategy_id": demo.strategy.pk,
                "interval_start": (close - step).isoformat(),
                "trigger": "replay",
            },
            queue=DEMO_QUEUE,
        )
        deadline = time.monotonic() + timeout_per_close
        while not execution_settled(strategy_id=demo.strategy.pk, interval_end=close):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the execution for the close at {close} did not finish")
            time.sleep(0.01)
        if index % 50 == 0:
            orders_sync_open.apply_async(queue=DEMO_QUEUE)  # as beat would, every so often


def live_demo_reconcile(demo: LiveDemo, *, timeout: float = 60.0) -> None:
    """Faults off, then the order sync until no order is left in doubt (as beat would)."""
    assert demo.sim is not None
    demo.sim.faults(fail_rate=0, rate_limit_rate=0, timeout_after_accept_rate=0)
    deadline = time.monotonic() + timeout
    while _in_doubt(demo) and time.monotonic() < deadline:
        orders_sync_open.apply_async(queue=DEMO_QUEUE)
        time.sleep(1.0)


def _in_doubt(demo: LiveDemo) -> int:
    return Order.objects.filter(
        subscription__in=demo.subscriptions, status__in=Order.ACTIVE_STATUSES
    ).count()


def live_demo_report(demo: LiveDemo) -> list[str]:
    """Every figure from the database and the simulator's own order book."""
    assert demo.sim is not None and demo.strategy is not None
    executions = StrategyExecution.objects.filter(strategy=demo.strategy)
    by_status = Counter(executions.values_list("status", flat=True))
    orders = Order.objects.filter(subscription__in=demo.subscriptions)
    order_status = Counter(orders.values_list("status", flat=True))
    on_exchange = demo.sim.orders()
    stats = demo.sim.stats()
    ours = {o.client_order_id: o for o in orders}
    wrong_key = sum(
        1
        for o in on_exchange
        if o["client_order_id"] in ours
        and demo.keys[ours[o["client_order_id"]].subscription_id] != o["api_key"]
    )
    unknown_to_us = sum(1 for o in on_exchange if o["client_order_id"] not in ours)
    filled_here = {cid for cid, o in ours.items() if o.status == Order.Status.FILLED}
    filled_there = {o["client_order_id"] for o in on_exchange if o["status"] == "FILLED"}
    faults = {k.removeprefix("fault_"): v for k, v in stats.items() if k.startswith("fault_")}
    lines = [
        f"market data: {demo.source}; strategy #{demo.strategy.pk} {demo.strategy.name}",
        "executions by status: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())),
        "orders by status: " + ", ".join(f"{k} {v}" for k, v in sorted(order_status.items())),
        f"simulator: {len(on_exchange)} orders ({stats.get('order_create', 0)} create requests, "
        f"{stats.get('order_query', 0)} lookups); faults injected: "
        + (", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none"),
        f"checks: filled orders here {len(filled_here)} = filled on the exchange "
        f"{len(filled_there)} ({'match' if filled_here == filled_there else 'MISMATCH'}); "
        f"orders unknown to the platform {unknown_to_us}; signed with another key {wrong_key}",
    ]
    for sub in demo.subscriptions:
        lines.append(_subscriber_line(sub, demo.keys[sub.pk], on_exchange))
    trades = Trade.objects.filter(
        subscription__in=demo.subscriptions, status__in=[Trade.Status.OPEN, Trade.Status.CLOSED]
    ).count()
    lines.append(
        f"demo-live: {executions.count()} executions (success {by_status.get('success', 0)}, "
        f"no_signal {by_status.get('no_signal', 0)}, failed {by_status.get('failed', 0)}), "
        f"{trades} trades, {len(on_exchange)} orders on the simulator, "
        f"{sum(faults.values())} faults injected, {len(demo.subscriptions)} live subscribers, "
        f"{time.monotonic() - demo.started:.1f} s"
    )
    return lines


def _subscriber_line(sub: StrategySubscription, api_key: str, on_exchange: list[dict]) -> str:
    sub.refresh_from_db()
    trades = Trade.objects.filter(subscription=sub)
    closed = trades.filter(status=Trade.Status.CLOSED).count()
    opened = trades.filter(status__in=[Trade.Status.OPEN, Trade.Status.CLOSED]).count()
    position = Position.objects.filter(subscription=sub).first()
    held = f"{position.side} {position.quantity.normalize():f}" if position else "flat 0"
    mine = sum(1 for o in on_exchange if o["api_key"] == api_key)
    return (
        f"  {sub.user.username}: capital {sub.capital:.4f}, risk {sub.risk_per_trade}, "
        f"leverage {sub.leverage}x | trades {opened} (closed {closed}), orders on its account "
        f"{mine}, position {held} {SYMBOL.split('/')[0]}, realized PnL "
        f"{sub.realized_pnl:+.8f} {SYMBOL.split('/')[1]}, fees {sub.fees_paid:.8f}"
    )


def live_demo_stop(demo: LiveDemo | None) -> None:
    if demo is None:
        return
    for process in reversed(demo.processes):
        process.stop()
    for sub in demo.subscriptions:
        sub.refresh_from_db()
        if sub.status != StrategySubscription.Status.CANCELLED:
            subscription_cancel(subscription=sub)
