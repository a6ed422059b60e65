"""Backtests: a strategy's own code over stored history, in the sandbox, on paper's rules.

``backtest_create`` checks a request and records it (queued); ``backtest_run`` replays the
period candle by candle (``backtests.engine``) and records the result once, complete, with
status done, or the reason it failed. Nothing here touches a subscription, an execution, a
trade or an order of the platform.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backtests.engine import Account, Bar, Sizing
from backtests.lookahead import LookaheadCheck
from backtests.metrics import backtest_metrics
from backtests.models import Backtest, BacktestTrade
from backtests.results import BacktestSeries
from core.time_utils import ms_to_datetime, resolution_to_timedelta, round_to_interval_boundary
from markets.candles import candles_between, candles_closed_window, candles_span
from markets.models import Candle
from markets.symbols import symbol_quote
from strategies.models import Strategy
from strategies.sandbox import (
    StepResult,
    StrategySession,
    inspect_code,
    prepare_sandbox,
    run_signals,
    strategy_session,
)
from strategies.sandbox.protocol import storable_text
from subscriptions.services import sizing_validate
from trades.brokers import PaperBroker

logger = logging.getLogger(__name__)

Status = Backtest.Status
Method = Backtest.Method
MAX_BPS = Decimal("1000")  # 10 % a side: beyond any real fee or slippage
PROGRESS_EVERY_S = 1.0
# Candles of a vectorised replay between looks for the look-ahead check's answer: a poll
# costs about a microsecond, the strategy's step about a hundred candles of the replay.
CHECK_POLL_EVERY = 8
MAX_STORED_SKIPS = 1000


class BacktestFailed(Exception):
    """The backtest cannot complete; the message is the reason shown to the user."""


@dataclass(frozen=True)
class Period:
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Costs:
    fee_bps: Decimal | None = None  # None: the platform's paper costs
    slippage_bps: Decimal | None = None


@dataclass(frozen=True)
class Subject:
    """What is tested: a published strategy, or code on a market."""

    strategy: Strategy | None = None
    code: str = ""
    settings: dict[str, Any] | None = None
    exchange: str = ""
    symbol: str = ""
    resolution: str = ""


# --- creating a backtest ---------------------------------------------------------------------
def backtest_create(
    *,
    owner: User,
    subject: Subject,
    period: Period,
    sizing: Sizing,
    costs: Costs,
    method: str = Method.PER_CANDLE,
) -> Backtest:
    """Check a backtest request (``ValidationError`` with the fields at fault) and queue it."""
    fields = _subject_fields(subject)
    sizing_validate(
        capital=sizing.capital, risk_per_trade=sizing.risk_per_trade, leverage=sizing.leverage
    )
    fee, slippage = _costs(costs)
    if method not in Method.values:
        raise ValidationError({"method": f"method must be one of {', '.join(Method.values)}"})
    start, end, total = _period(fields, period)
    return Backtest.objects.create(
        owner=owner,
        **fields,
        start=start,
        end=end,
        capital=sizing.capital,
        risk_per_trade=sizing.risk_per_trade,
        leverage=sizing.leverage,
        fee_bps=fee,
        slippage_bps=slippage,
        method=method,
        candles_total=total,
    )


def _subject_fields(subject: Subject) -> dict[str, Any]:
    if (subject.strategy is None) == (not subject.code):
        raise ValidationError({"strategy": "give either a strategy or code, not both"})
    if subject.strategy is not None:
        strategy = subject.strategy
        return {
            "strategy": strategy,
            "code_version": strategy.code_version,
            "strategy_settings": dict(strategy.settings or {}),
            "exchange": strategy.exchange,
            "symbol": strategy.symbol,
            "resolution": strategy.resolution,
            "lookback": strategy.lookback,
        }
    check = inspect_code(subject.code)
    if not check.ok:
        raise ValidationError({"code": check.error})
    _check_market(subject)
    return {
        "code": subject.code,
        "strategy_settings": dict(subject.settings or {}),
        "exchange": subject.exchange,
        "symbol": subject.symbol,
        "resolution": subject.resolution,
        "lookback": check.lookback or django_settings.STRATEGY_DEFAULT_LOOKBACK,
    }


def _check_market(subject: Subject) -> None:
    errors = {
        name: f"{name} is required with code"
        for name in ("exchange", "symbol", "resolution")
        if not getattr(subject, name)
    }
    if subject.resolution and "resolution" not in errors:
        try:
            resolution_to_timedelta(subject.resolution)
        except ValueError:
            errors["resolution"] = f"unknown resolution {subject.resolution!r}"
    if subject.settings is not None and not isinstance(subject.settings, dict):
        errors["settings"] = "settings must be an object"
    if errors:
        raise ValidationError(errors)


def _costs(costs: Costs) -> tuple[Decimal, Decimal]:
    fee = django_settings.PAPER_FEE_BPS if costs.fee_bps is None else costs.fee_bps
    slippage = (
        django_settings.PAPER_SLIPPAGE_BPS if costs.slippage_bps is None else costs.slippage_bps
    )
    errors = {
        name: f"{name} must be between 0 and {MAX_BPS}"
        for name, value in (("fee_bps", fee), ("slippage_bps", slippage))
        if not 0 <= value <= MAX_BPS
    }
    if errors:
        raise ValidationError(errors)
    return Decimal(fee), Decimal(slippage)


def _period(fields: dict[str, Any], period: Period) -> tuple[datetime, datetime, int]:
    """The period on candle boundaries, within what the store holds, and its candle count."""
    market = {k: fields[k] for k in ("exchange", "symbol", "resolution")}
    label = f"{market['exchange']} {market['symbol']} {market['resolution']}"
    if period.start and period.end and period.start >= period.end:
        raise ValidationError({"start": "start must be before end"})
    span = candles_span(**market)
    if span is None:
        raise ValidationError(
            {"symbol": f"no {label} candles are stored (manage.py fetch_candles downloads them)"}
        )
    start = max(_boundary_up(period.start, market["resolution"]) or span[0], span[0])
    end = min(period.end or span[1], span[1])
    total = Candle.objects.filter(
        **market,
        open_time__gte=start,
        open_time__lte=end - resolution_to_timedelta(market["resolution"]),
    ).count()
    if total == 0:
        raise ValidationError(
            {"start": f"no {label} candles between {start.isoformat()} and {end.isoformat()}"}
        )
    cap = django_settings.BACKTEST_MAX_CANDLES
    if total > cap:
        raise ValidationError({"end": f"the period has {total} candles; at most {cap}"})
    _check_length(market, start=start, total=total, lookback=fields["lookback"])
    return start, end, total


def _check_length(market: dict[str, str], *, start: datetime, total: int, lookback: int) -> None:
    """Warm-up and at least one traded close: the candles before the start (up to LOOKBACK - 1)
    and the period's own must add up to more than the warm-up."""
    before = Candle.objects.filter(**market, open_time__lt=start).order_by("-open_time")
    earlier = before[: max(lookback - 1, 0)].count()
    if earlier + total < lookback:
        raise ValidationError(
            {
                "start": f"too short: {earlier + total} candles with the warm-up before the "
                f"start, and the strategy needs LOOKBACK={lookback} before its first signal"
            }
        )


def _boundary_up(moment: datetime | None, resolution: str) -> datetime | None:
    if moment is None:
        return None
    floor = round_to_interval_boundary(moment, resolution)
    return floor if floor == moment else floor + resolution_to_timedelta(resolution)


# --- running it ------------------------------------------------------------------------------
Progress = Callable[[int, int], None]


@dataclass
class _Run:
    backtest: Backtest
    session: StrategySession
    warm: list[list[float]]
    rows: list[list[float]]
    step_ms: int
    series: BacktestSeries
    account: Account
    warnings: list[str] = field(default_factory=list)
    isolation: str = ""
    logs: str = ""  # what generate_signals printed (vectorised)
    check: LookaheadCheck | None = None  # vectorised: the look-ahead check, under way
    lookahead: dict[str, Any] = field(default_factory=dict)

    @property
    def sandbox_logs(self) -> str:
        """What the strategy printed: per candle, in the session (its logs are collected as
        it closes); vectorised, in the generate_signals call (the check's session only
        repeats generate_signal)."""
        return self.session.logs if self.backtest.method == Method.PER_CANDLE else self.logs


def backtest_run(*, backtest_id: int, on_progress: Progress | None = None) -> Backtest:
    """Run a queued backtest to the end; a second call (a redelivered task) changes nothing."""
    if not _claim(backtest_id):
        return Backtest.objects.get(pk=backtest_id)
    backtest = Backtest.objects.select_related("strategy").get(pk=backtest_id)
    started = time.monotonic()
    run: _Run | None = None
    try:
        with _sandbox_ahead(backtest) as session:
            run = _prepare(backtest, session)
            _simulate(run, on_progress)
            summary = _summary(run)  # the look-ahead check's steps go on meanwhile
            _check_verdict(run)
        _record(run, summary, started)
    except BacktestFailed as exc:
        _fail(backtest, str(exc), started, run)
    except Exception as exc:  # never leave a backtest running: record why it stopped
        logger.exception("backtest %s failed", backtest_id)
        _fail(backtest, f"internal error: {type(exc).__name__}: {exc}", started, run)
    backtest.refresh_from_db()
    return backtest


def _claim(backtest_id: int) -> bool:
    """Queued → running, once; a run abandoned by a dead worker may be taken over."""
    abandoned = timezone.now() - timedelta(seconds=django_settings.BACKTEST_BUDGET_S * 2)
    return bool(
        Backtest.objects.filter(pk=backtest_id)
        .filter(Q(status=Status.QUEUED) | Q(status=Status.RUNNING, started_at__lt=abandoned))
        .update(status=Status.RUNNING, started_at=timezone.now(), candles_done=0)
    )


def _code(backtest: Backtest) -> str:
    if backtest.strategy is None:
        if not backtest.code:
            raise BacktestFailed("the strategy this backtest was for no longer exists")
        return backtest.code
    if backtest.strategy.code_version != backtest.code_version:
        raise BacktestFailed("the strategy's code changed since this backtest was requested")
    return backtest.strategy.code


@contextlib.contextmanager
def _sandbox_ahead(backtest: Backtest) -> Iterator[StrategySession]:
    """The run's sandbox, set up while its candles load: the session (per candle: the
    strategy's; vectorised: the look-ahead check's), started with no candles (the warm-up
    goes with the first step, the same window), and for generate_signals' single call a
    prepared sandbox of the zygote the session started. A session that could not start
    says so at its first step."""
    options = _sandbox_options(backtest)
    with strategy_session(history=[], lookback=backtest.lookback, **options) as session:
        if backtest.method == Method.VECTORISED:
            prepare_sandbox(
                require_isolation=options["require_isolation"],
                isolation_mode=options["isolation_mode"],
            )
        yield session


def _prepare(backtest: Backtest, session: StrategySession) -> _Run:
    market = {"exchange": backtest.exchange, "symbol": backtest.symbol}
    market["resolution"] = backtest.resolution
    step = resolution_to_timedelta(backtest.resolution)
    cap = django_settings.BACKTEST_MAX_CANDLES
    rows = candles_between(**market, start=backtest.start, end=backtest.end, limit=cap + 1)
    if len(rows) > cap:
        raise BacktestFailed(f"the period has more than {cap} candles")
    warm = (
        candles_closed_window(**market, close_time=backtest.start, limit=backtest.lookback - 1)
        if backtest.lookback > 1
        else []
    )
    step_ms = int(step.total_seconds() * 1000)
    run = _Run(backtest, session, warm, rows, step_ms, *_account(backtest))
    _warm_up_from_period(run)
    # The traded candles: what progress counts to (the period's warm-up ones are not traded).
    backtest.candles_total = len(run.rows)
    Backtest.objects.filter(pk=backtest.pk).update(candles_total=backtest.candles_total)
    return run


def _account(backtest: Backtest) -> tuple[BacktestSeries, Account]:
    series = BacktestSeries(
        resolution=backtest.resolution,
        capital=backtest.capital,
        quote=symbol_quote(backtest.symbol),
    )
    sizing = Sizing(backtest.capital, backtest.risk_per_trade, backtest.leverage)
    broker = PaperBroker(fee_bps=backtest.fee_bps, slippage_bps=backtest.slippage_bps)
    return series, Account(sizing=sizing, broker=broker, series=series)


def _warm_up_from_period(run: _Run) -> None:
    """Without enough earlier candles, the period's first ones warm the strategy up (live,
    those closes are skipped "warming up"): never traded, and said so."""
    lookback = run.backtest.lookback
    need = lookback - 1 - len(run.warm)
    if need <= 0:
        return
    if len(run.rows) <= need:
        raise BacktestFailed(
            f"too short: {len(run.warm) + len(run.rows)} candles, and the strategy needs "
            f"LOOKBACK={lookback} before its first signal"
        )
    run.warm, run.rows = run.warm + run.rows[:need], run.rows[need:]
    run.warnings.append(
        f"warm-up: the store holds {lookback - 1 - need} candles before the start, so the "
        f"period's first {need} candles were used to warm up (LOOKBACK={lookback}), not traded"
    )


def _simulate(run: _Run, on_progress: Progress | None) -> None:
    if run.backtest.method == Method.VECTORISED:
        _simulate_vectorised(run, on_progress)
        return
    run.isolation = run.session.isolation
    _replay(run, _stepper(run, run.session), on_progress)


def _stepper(run: _Run, session: StrategySession) -> Callable[[int, list[float]], Any]:
    """generate_signal's answer at each close. The next close is sent as soon as this one is
    answered, so the strategy computes it while this process values the account: the child
    still gets each close only after it answered the one before. The first step carries the
    warm-up (the session started before the candles were loaded)."""
    pending: list[StepResult | None] = [session.send([*run.warm, run.rows[0]])] if run.rows else []

    def signal_at(index: int, row: list[float]) -> Any:
        result = pending[0] or session.receive()
        if not result.ok:
            raise BacktestFailed(_failed_at(run, row, result.error))
        if index + 1 < len(run.rows):
            pending[0] = session.send([run.rows[index + 1]])
        return result.value

    return signal_at


def _sandbox_options(backtest: Backtest) -> dict[str, Any]:
    timeout = (
        backtest.strategy.timeout_s if backtest.strategy else django_settings.STRATEGY_TIMEOUT_S
    )
    return {
        "code": _code(backtest),
        "settings": dict(backtest.strategy_settings or {}),
        "timeout_s": min(timeout, django_settings.STRATEGY_MAX_TIMEOUT_S),
        "budget_s": django_settings.BACKTEST_BUDGET_S,
        "memory_mb": django_settings.STRATEGY_MEMORY_MB,
        "require_isolation": django_settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
        "isolation_mode": django_settings.STRATEGY_SANDBOX_ISOLATION,
    }


def _failed_at(run: _Run, row: list[float], error: str) -> str:
    close = ms_to_datetime(int(row[0]) + run.step_ms)
    return f"the strategy failed at the candle closing {close.isoformat()}: {error}"


def _replay(
    run: _Run, signal_at: Callable[[int, list[float]], Any], on_progress: Progress | None
) -> None:
    """Each close in the pipeline's order: stops, the strategy's signal, the valuation."""
    account, total = run.account, len(run.rows)
    reported = time.monotonic()
    for index, row in enumerate(run.rows):
        bar = Bar.from_row(row, step_ms=run.step_ms)
        account.check_stops(bar)
        account.apply(signal_at(index, row), bar)
        account.mark(bar)
        if time.monotonic() - reported >= PROGRESS_EVERY_S or index + 1 == total:
            reported = time.monotonic()
            _progress(run.backtest, index + 1, on_progress)


def _progress(backtest: Backtest, done: int, on_progress: Progress | None) -> None:
    Backtest.objects.filter(pk=backtest.pk).update(candles_done=done)
    if on_progress is not None:
        on_progress(done, backtest.candles_total)


def _simulate_vectorised(run: _Run, on_progress: Progress | None) -> None:
    """``generate_signals`` once over warm-up and period, then checked against
    ``generate_signal`` on history cut at a sample of candles (look-ahead bias). The check's
    session started while the candles loaded; its steps are taken as their answers come in,
    between candles of the replay and parts of the summary, so the strategy computes them
    while this process works."""
    rows = run.warm + run.rows
    signals = _vectorised_signals(run, rows)
    check = LookaheadCheck(
        session=run.session,
        rows=rows,
        signals=signals,
        first=len(run.warm),
        lookback=run.backtest.lookback,
    )
    run.check = check

    def signal_at(index: int, _row: list[float]) -> Any:
        if index % CHECK_POLL_EVERY == 0:
            check.advance_if_answered()
        return signals[index]

    _replay(run, signal_at, on_progress)


def _check_progress(run: _Run) -> None:
    if run.check is not None:
        run.check.advance_if_answered()


def _check_verdict(run: _Run) -> None:
    """The check to its end. One that could not finish fails the backtest; disagreements
    are its warning."""
    if run.check is None:
        return
    run.lookahead, run.check = run.check.finish(), None
    if run.lookahead.get("error"):
        raise BacktestFailed(str(run.lookahead["error"]))
    if run.lookahead.get("disagreements"):
        run.warnings.append(
            f"look-ahead bias: generate_signals disagrees with generate_signal on history cut "
            f"at the candle for {len(run.lookahead['disagreements'])} of "
            f"{run.lookahead['checked']} candles checked; these results are not to be trusted"
        )


def _vectorised_signals(run: _Run, rows: list[list[float]]) -> list[Any]:
    """generate_signals' answer for each traded candle (its call gets the warm-up too)."""
    options = _sandbox_options(run.backtest)
    options.pop("budget_s")
    result = run_signals(candles=rows, **options)
    run.isolation, run.logs = result.isolation, result.logs
    if not result.ok:
        raise BacktestFailed(f"generate_signals failed: {result.error}")
    assert result.value is not None
    return list(result.value["signals"])[len(run.warm) :]


# --- recording -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Summary:
    """What is written of a run, computed before anything is."""

    metrics: dict[str, Any]
    series: dict[str, list[Any]]
    trades: list[BacktestTrade]
    gaps: list[dict[str, Any]]


def _summary(run: _Run) -> _Summary:
    series = run.series
    metrics = backtest_metrics(series=series)
    _check_progress(run)
    stored = _series_json(series)
    _check_progress(run)
    return _Summary(
        metrics=metrics,
        series=stored,
        trades=[_trade_row(run.backtest, trade) for trade in series.trades],
        gaps=_gaps(run.warm[-1:] + run.rows, run.step_ms),
    )


def _record(run: _Run, summary: _Summary, started: float) -> None:
    """The whole result in one transaction, with status done: never shown half-written."""
    backtest = run.backtest
    if summary.gaps:
        missing = sum(gap["missing"] for gap in summary.gaps)
        run.warnings.append(
            f"gaps: {missing} candles are missing in {len(summary.gaps)} places; "
            "no signal was taken at those closes (live, they are skipped too)"
        )
    metrics = {**summary.metrics, "skipped_signals": len(run.series.skips)}
    metrics["warnings"] = run.warnings
    with transaction.atomic():
        BacktestTrade.objects.bulk_create(summary.trades, batch_size=1000)
        backtest.metrics, backtest.series, backtest.gaps = metrics, summary.series, summary.gaps
        backtest.skips = [
            {"time": s.time.isoformat(), "signal": s.signal, "reason": s.reason}
            for s in run.series.skips[:MAX_STORED_SKIPS]
        ]
        backtest.lookahead = run.lookahead
        _finish(backtest, Status.DONE, "", started, run)


def _finish(backtest: Backtest, status: str, error: str, started: float, run: _Run | None) -> None:
    backtest.status, backtest.error = status, error
    backtest.finished_at = timezone.now()
    backtest.duration_ms = (time.monotonic() - started) * 1000
    if run is not None:
        backtest.candles_done = len(run.series.times)
        backtest.sandbox_isolation = run.isolation
        backtest.logs = storable_text(run.sandbox_logs, django_settings.BACKTEST_MAX_LOG_CHARS)
    backtest.save()


def _fail(backtest: Backtest, reason: str, started: float, run: _Run | None) -> None:
    """Failed with the reason, and no result: a partial one would read as the whole. What
    the strategy printed, and how far it got, are kept."""
    BacktestTrade.objects.filter(backtest=backtest).delete()
    backtest.metrics, backtest.series, backtest.skips = {}, {}, []
    _finish(backtest, Status.FAILED, storable_text(reason, 8192), started, run)


def _trade_row(backtest: Backtest, trade: Any) -> BacktestTrade:
    return BacktestTrade(
        backtest=backtest,
        side=trade.side,
        quantity=trade.quantity,
        entry_time=trade.entry_time,
        entry_price=trade.entry_price,
        entry_fee=trade.entry_fee,
        stop_loss=trade.stop_loss,
        take_profit=trade.take_profit,
        exit_time=trade.exit_time,
        exit_price=trade.exit_price,
        exit_fee=trade.exit_fee,
        pnl=trade.pnl,
        exit_reason=trade.exit_reason,
        metadata=trade.metadata,
    )


def _series_json(series: BacktestSeries) -> dict[str, list[Any]]:
    return {
        "times": [int(t.timestamp() * 1000) for t in series.times],
        "closes": [f"{c:f}" for c in series.closes],
        "equity": [f"{e:f}" for e in series.equity],
    }


def _gaps(rows: list[list[float]], step_ms: int) -> list[dict[str, Any]]:
    """Missing candles between consecutive stored ones: where, and how many."""
    gaps = []
    for before, after in itertools.pairwise(rows):
        missing = (int(after[0]) - int(before[0])) // step_ms - 1
        if missing > 0:
            gaps.append(
                {
                    "after": _iso_ms(int(before[0]) + step_ms),
                    "before": _iso_ms(int(after[0])),
                    "missing": missing,
                }
            )
    return gaps


def _iso_ms(ms: int) -> str:
    return ms_to_datetime(ms).isoformat()
