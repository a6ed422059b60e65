"""The end-to-end demo: a real worker replays real candle closes through the candle-close task."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db.models import Count, Sum

from backtests.charts import backtest_chart
from backtests.engine import Sizing
from backtests.models import Backtest
from backtests.selectors import backtest_report, backtest_series, backtest_summary_lines
from backtests.services import Costs, Period, Subject, backtest_create, backtest_run
from core.time_utils import resolution_to_timedelta
from execution.tasks import candle_close
from markets.market_data import market_data_load
from markets.models import Candle
from strategies.models import Strategy, StrategyExecution
from strategies.selectors import execution_settled
from strategies.services import strategy_create
from subscriptions.models import StrategySubscription
from subscriptions.services import strategy_retire, subscription_cancel, subscription_create
from tooling.processes import WorkerProcess, worker_env
from trades.models import Trade

EXCHANGE, SYMBOL, RESOLUTION = "binance", "ETH/BTC", "5m"
DEMO_AUTHOR = "demo-author"
SUBSCRIBERS = (  # capital (in BTC, the quote currency), risk per trade, leverage
    ("0.5", "0.01", "1"),
    ("2", "0.02", "2"),
    ("10", "0.005", "3"),
)

# The README's example strategy: the demo runs exactly what a trader would deploy.
SMA_CROSSOVER = (settings.BASE_DIR / "docs" / "examples" / "sma_crossover.py").read_text()


@dataclass
class DemoRun:
    strategy: Strategy
    subscriptions: list[StrategySubscription]
    closes: list[datetime]
    source: str
    started: float = field(default_factory=time.monotonic)


def _retire_previous_demos(author: User) -> None:
    # A crashed earlier run may have left demo subscriptions active: they would run too.
    for old in Strategy.objects.filter(owner=author).exclude(status=Strategy.Status.RETIRED):
        strategy_retire(strategy=old)


def demo_setup(*, closes: int) -> DemoRun:
    loaded = market_data_load(
        exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION, count=closes + 200
    )
    author, _ = get_user_model().objects.get_or_create(username=DEMO_AUTHOR)
    _retire_previous_demos(author)
    strategy = strategy_create(
        owner=author,
        name=f"SMA crossover {time.strftime('%Y-%m-%d %H:%M:%S')}",
        code=SMA_CROSSOVER,
        exchange=EXCHANGE,
        symbol=SYMBOL,
        resolution=RESOLUTION,
        settings={"fast": 9, "slow": 21, "stop_pct": 0.01, "target_pct": 0.02},
        description="Demo strategy",
        is_public=True,
    )
    run_tag = strategy.pk
    subscriptions = []
    for index, (capital, risk, leverage) in enumerate(SUBSCRIBERS, start=1):
        user, _ = get_user_model().objects.get_or_create(username=f"demo-sub{index}-{run_tag}")
        subscriptions.append(
            subscription_create(
                user=user,
                strategy=strategy,
                capital=Decimal(capital),
                risk_per_trade=Decimal(risk),
                leverage=Decimal(leverage),
            )
        )
    return DemoRun(
        strategy, subscriptions, _replay_closes(closes, lookback=strategy.lookback), loaded.source
    )


def _replay_closes(count: int, *, lookback: int) -> list[datetime]:
    opens = list(
        Candle.objects.filter(exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION)
        .order_by("open_time")
        .values_list("open_time", flat=True)[lookback : lookback + count]
    )
    step = resolution_to_timedelta(RESOLUTION)
    return [open_time + step for open_time in opens]


def demo_replay(run: DemoRun, *, timeout_per_close: float = 60.0) -> None:
    """Fire each close through the real candle-close task, one after the other, as time would."""
    for close in run.closes:
        candle_close.delay(resolution=RESOLUTION, close_time=close.isoformat(), trigger="replay")
        deadline = time.monotonic() + timeout_per_close
        while not execution_settled(strategy_id=run.strategy.pk, interval_end=close):
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution for the close at {close.isoformat()} did not finish")
            time.sleep(0.01)


def demo_report(run: DemoRun) -> list[str]:
    """Every figure is read back from the database."""
    executions = StrategyExecution.objects.filter(strategy=run.strategy)
    by_status = Counter(executions.values_list("status", flat=True))
    lines = [
        f"market data: {run.source}; strategy #{run.strategy.pk} {run.strategy.name}",
        "executions by status: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())),
    ]
    for sub in StrategySubscription.objects.filter(strategy=run.strategy).order_by("id"):
        lines.append(_subscriber_line(sub))
    trades = Trade.objects.filter(
        subscription__strategy=run.strategy, status__in=[Trade.Status.OPEN, Trade.Status.CLOSED]
    ).count()
    elapsed = time.monotonic() - run.started
    lines.append(
        f"demo: {executions.count()} executions (success {by_status.get('success', 0)}, "
        f"no_signal {by_status.get('no_signal', 0)}, failed {by_status.get('failed', 0)}), "
        f"{trades} trades, {len(run.subscriptions)} subscribers, {elapsed:.1f} s"
    )
    return lines


def _subscriber_line(sub: StrategySubscription) -> str:
    trades = Trade.objects.filter(subscription=sub)
    filled = trades.filter(status__in=[Trade.Status.OPEN, Trade.Status.CLOSED])
    open_qty = filled.filter(status=Trade.Status.OPEN).aggregate(q=Sum("quantity"))["q"] or 0
    closed = filled.filter(status=Trade.Status.CLOSED)
    wins = closed.filter(pnl__gt=0).count()
    return (
        f"  {sub.user.username}: capital {sub.capital:.4f}, risk {sub.risk_per_trade}, "
        f"leverage {sub.leverage}x | trades {filled.count()} "
        f"(closed {closed.count()}, won {wins}), "
        f"open position {open_qty:f} {SYMBOL.split('/')[0]}, realized PnL {sub.realized_pnl:+.8f} "
        f"{SYMBOL.split('/')[1]}, fees {sub.fees_paid:.8f}"
    )


def demo_backtest(run: DemoRun) -> list[str]:
    """The demo's strategy backtested over the closes it just replayed, with the first
    subscriber's sizing: the same trades, by construction; the report and chart on disk."""
    first = run.subscriptions[0]
    step = resolution_to_timedelta(RESOLUTION)
    backtest = backtest_create(
        owner=run.strategy.owner,
        subject=Subject(strategy=run.strategy),
        period=Period(start=run.closes[0] - step, end=run.closes[-1]),
        sizing=Sizing(first.capital, first.risk_per_trade, first.leverage),
        costs=Costs(),
    )
    backtest = backtest_run(backtest_id=backtest.pk)
    if backtest.status != Backtest.Status.DONE:
        return [f"backtest #{backtest.pk} failed: {backtest.error}"]
    out = settings.VAR_DIR / "demo"
    out.mkdir(parents=True, exist_ok=True)
    report, chart = out / f"backtest-{backtest.pk}.html", out / f"backtest-{backtest.pk}.png"
    report.write_text(backtest_report(backtest=backtest))
    chart.write_bytes(backtest_chart(series=backtest_series(backtest=backtest)))
    paper = Trade.objects.filter(
        subscription=first, status__in=[Trade.Status.OPEN, Trade.Status.CLOSED]
    ).aggregate(n=Count("id"), pnl=Sum("pnl"))
    same = (paper["n"], paper["pnl"] or 0) == (
        backtest.trades.count(),
        backtest.trades.aggregate(pnl=Sum("pnl"))["pnl"] or 0,
    )
    return [
        *backtest_summary_lines(backtest=backtest),
        f"backtest vs {first.user.username}'s paper trades over the same closes: "
        + ("the same trades and PnL" if same else f"DIFFERENT ({paper['n']} paper trades)"),
        f"backtest report: {report}",
        f"backtest chart: {chart}",
    ]


def demo_teardown(run: DemoRun | None, worker: WorkerProcess | None) -> None:
    if worker is not None:
        worker.stop()
    if run is not None:
        for sub in StrategySubscription.objects.filter(strategy=run.strategy, status="active"):
            subscription_cancel(subscription=sub)


def demo_start_worker() -> WorkerProcess:
    return WorkerProcess(env=worker_env(), log_dir=settings.VAR_DIR / "demo", concurrency=2).start()
