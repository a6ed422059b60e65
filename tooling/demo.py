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
from trades.charts import equity_chart
from trades.models import Trade
from trades.selectors import equity_series, subscription_stats

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
        _period_line(run),
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


def _period_line(run: DemoRun) -> str:
    """The replayed period, and what holding the base currency over it returned."""
    step = resolution_to_timedelta(RESOLUTION)
    market = Candle.objects.filter(exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION)
    first = market.get(open_time=run.closes[0] - step)
    last = market.get(open_time=run.closes[-1] - step)
    held = (last.close / first.close - 1) * 100  # from the first close, as backtests count it
    return (
        f"replayed: {run.closes[0].isoformat()} → {run.closes[-1].isoformat()} "
        f"({len(run.closes)} closes); buy and hold {SYMBOL.split('/')[0]} over it {held:+.2f} %"
    )


def _subscriber_line(sub: StrategySubscription) -> str:
    trades = Trade.objects.filter(subscription=sub)
    filled = trades.filter(status__in=[Trade.Status.OPEN, Trade.Status.CLOSED])
    open_qty = filled.filter(status=Trade.Status.OPEN).aggregate(q=Sum("quantity"))["q"] or 0
    closed = filled.filter(status=Trade.Status.CLOSED)
    stats = subscription_stats(subscription=sub)
    base, quote = SYMBOL.split("/")
    return (
        f"  {sub.user.username}: capital {_plain(sub.capital)} {quote}, risk "
        f"{_plain(sub.risk_per_trade * 100)} %, leverage {_plain(sub.leverage)}x | trades "
        f"{filled.count()} (closed {closed.count()}, won {closed.filter(pnl__gt=0).count()}), "
        f"open position {_plain(Decimal(open_qty))} {base} | return {_pct(stats['return_pct'])}, "
        f"max drawdown {_pct(stats['max_drawdown_pct'], sign=False)}, realized PnL "
        f"{sub.realized_pnl:+.8f} {quote}, fees {sub.fees_paid:.8f} {quote}{_fee_share(sub)}"
    )


def _fee_share(sub: StrategySubscription) -> str:
    """Fees beside what they cost: a share of the net loss, or of the gain before them."""
    net, fees = sub.realized_pnl, sub.fees_paid
    if fees == 0 or net == 0:
        return ""
    if net < 0:
        return f" ({fees / -net:.0%} of the net loss)"
    return f" ({fees / (net + fees):.0%} of the gain before fees)"


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _pct(value: Decimal | float | None, *, sign: bool = True) -> str:
    if value is None:
        return "-"
    return f"{Decimal(str(value)):{'+' if sign else ''}.2f} %"


def demo_equity_charts(run: DemoRun) -> list[str]:
    """Each subscriber's stored equity curve over the replay, drawn to a file."""
    out = settings.VAR_DIR / "demo"
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for sub in StrategySubscription.objects.filter(strategy=run.strategy).order_by("id"):
        path = out / f"equity-{sub.user.username}.png"
        # The replayed closes only: subscribing is dated today, after the past it replays.
        step = resolution_to_timedelta(RESOLUTION)
        points = equity_series(subscription=sub, start=run.closes[0] - step, end=run.closes[-1])
        path.write_bytes(
            equity_chart(points=points, currency=SYMBOL.split("/")[1], title=str(sub), fmt="png")
        )
        lines.append(f"equity chart of {sub.user.username}: {path}")
    return lines


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
