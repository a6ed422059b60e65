"""One execution per (strategy, candle): claim, run the strategy once, record, fan out."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backtests.record import record_follow
from core.clock import market_now, market_to_real
from core.events import EventType, event_emit
from core.locks import redis_lock, strategy_run_lock_key
from core.logs import log_context
from core.metrics import (
    BEAT_FOUND_DONE,
    CLOSE_TO_START,
    EXECUTION_DURATION,
    EXECUTIONS,
    FANOUT_SIZE,
    MARKET_LAST_EXECUTION,
    SANDBOX_DURATION,
)
from core.time_utils import (
    compute_lock_ttl,
    format_interval_key,
    resolution_to_timedelta,
    round_to_interval_boundary,
    validate_execution_timing,
)
from execution.scheduling import beat_closes_due
from markets.candles import candles_closed_window, candles_fetchable, candles_settle
from markets.registry import (
    market_key,
    registry_strategy_ids,
    registry_strategy_ids_by_market,
)
from notifications.models import NotificationEvent
from notifications.services import Notice, notifications_record
from strategies.models import Strategy, StrategyExecution
from strategies.sandbox import prepare_sandbox, run_strategy
from strategies.signals import InvalidSignal, Signal, signal_parse
from trades.selectors import fanout_targets
from trades.services import fanout_process, trades_check_stops
from trades.tasks import fanout_orders

logger = logging.getLogger(__name__)

Status = StrategyExecution.Status
Trigger = StrategyExecution.Trigger


@dataclass(frozen=True)
class RunOutcome:
    outcome: str  # ran | duplicate | locked | not_closed | inactive | stale | taken_over
    execution_id: int | None = None
    detail: str = ""


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _own_savepoint() -> AbstractContextManager[Any]:
    """A savepoint inside a caller's transaction, so that a refused write leaves it usable.
    Outside one a single statement commits or fails alone, and BEGIN and COMMIT would be two
    more round trips for each of a close's thousand executions."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _claim_row(
    *, strategy: Strategy, interval_start: datetime, trigger: str, scheduled_at: datetime | None
) -> tuple[StrategyExecution, bool]:
    """Insert the execution row; the unique constraint picks one winner per candle."""
    now = timezone.now()
    interval_end = interval_start + resolution_to_timedelta(strategy.resolution)
    # Drift is real time since the candle closed (under a replay clock too).
    drift_ms = (now - market_to_real(interval_end)).total_seconds() * 1000
    try:
        with _own_savepoint():
            row = StrategyExecution.objects.create(
                strategy=strategy,
                interval_start=interval_start,
                interval_end=interval_end,
                trigger=trigger,
                scheduled_at=scheduled_at,
                started_at=now,
                drift_ms=drift_ms,
                worker_id=_worker_id(),
                settings_version=strategy.settings_version,
                code_version=strategy.code_version,
            )
        _claimed(row, strategy)
        return row, True
    except IntegrityError:
        return StrategyExecution.objects.get(
            strategy=strategy, interval_start=interval_start
        ), False


def _claimed(row: StrategyExecution, strategy: Strategy) -> None:
    market = {"exchange": strategy.exchange, "resolution": strategy.resolution}
    if row.is_real_time and row.drift_ms is not None:
        CLOSE_TO_START.labels(**market, trigger=row.trigger).observe(row.drift_ms / 1000)
    end = market_to_real(row.interval_end).timestamp()
    MARKET_LAST_EXECUTION.labels(**market, symbol=strategy.symbol).set(end)


class ExecutionTakenOver(Exception):
    """Another worker took this execution over while this one was away (partitioned, paused,
    or slower than the lock's lifetime): this run's result is not ours to record."""


def _take_over(execution: StrategyExecution) -> bool:
    """Resume a row left ``running`` by a worker that died (we hold the lock it lost).

    ``attempts`` is the claim's fencing token: the update succeeds for one taker only, and
    the worker it was taken from can no longer record its result (:func:`_record_if_ours`)."""
    claimed = execution.attempts
    execution.worker_id, execution.started_at = _worker_id(), timezone.now()
    execution.attempts = claimed + 1
    return bool(
        StrategyExecution.objects.filter(
            pk=execution.pk, status=Status.RUNNING, attempts=claimed
        ).update(
            worker_id=execution.worker_id,
            attempts=execution.attempts,
            started_at=execution.started_at,
        )
    )


# What running an execution writes on its row (with the fields execution_finish is given);
# the fan-out's counters and the claim's fields belong to others and are left as they are.
RESULT_FIELDS = (
    "status",
    "error",
    "finished_at",
    "duration_ms",
    "close_price",
    "data_available_at",
    "candles_used",
    "logs",
    "sandbox_isolation",
)


def _record_if_ours(execution: StrategyExecution, names: Iterable[str]) -> None:
    """Write the result only while our claim holds, else raise ExecutionTakenOver.

    One conditional UPDATE is both the check and the write: a taker's claim (:func:`_take_over`)
    and this update exclude each other on the row, whichever comes first wins."""
    values = {name: getattr(execution, name) for name in dict.fromkeys([*RESULT_FIELDS, *names])}
    ours = StrategyExecution.objects.filter(
        pk=execution.pk, status=Status.RUNNING, attempts=execution.attempts
    )
    if not ours.update(**values):
        raise ExecutionTakenOver(
            f"execution {execution.pk} was taken over by another worker "
            f"(attempt {execution.attempts} was {execution.worker_id}'s): its result is dropped"
        )


def execution_finish(
    *, execution: StrategyExecution, status: str, error: str = "", **fields: object
) -> None:
    """Record an execution's final status and result, then announce it.

    Recording must not fail an execution into staying ``running``: if the result cannot be
    saved (the database refused a value), the execution is failed with the reason's class
    instead, in a transaction of its own, and announced as such. Raises ExecutionTakenOver,
    recording nothing, when another worker has taken the execution over meanwhile."""
    finished = timezone.now()
    execution.status, execution.error, execution.finished_at = status, error, finished
    execution.duration_ms = (finished - execution.started_at).total_seconds() * 1000
    for name, value in fields.items():
        setattr(execution, name, value)
    # A failure's notice is written with the result or not at all (never for a result that
    # was dropped); any other result is a single statement.
    failed = execution.status == Status.FAILED
    try:
        with transaction.atomic() if failed else _own_savepoint():
            _record_if_ours(execution, fields)
            _notify_failed(execution)
    except ExecutionTakenOver:
        raise
    except Exception as exc:
        logger.exception("could not record the result of execution %s", execution.pk)
        _finish_unrecordable(execution, cause=type(exc).__name__)
    _count_finished(execution)
    logger.info(
        "execution %s %s in %.0f ms", execution.pk, execution.status, execution.duration_ms or 0
    )
    _announce(execution)


def _count_finished(execution: StrategyExecution) -> None:
    strategy = execution.strategy
    market = {"exchange": strategy.exchange, "resolution": strategy.resolution}
    EXECUTIONS.labels(**market, status=execution.status, trigger=execution.trigger).inc()
    duration_s = (execution.duration_ms or 0) / 1000
    EXECUTION_DURATION.labels(**market, status=execution.status).observe(duration_s)


LINE = re.compile(r"\(line (\d+)\)")


def _notify_failed(execution: StrategyExecution) -> None:
    """Tell the strategy's author it failed (error and line), with the result; a notice
    that cannot be recorded is logged, never the execution's failure."""
    if execution.status != Status.FAILED:
        return
    line = LINE.search(execution.error)  # the error's own line, before any traceback
    notice = Notice(
        user_id=execution.strategy.owner_id,
        event=NotificationEvent.EXECUTION_FAILED,
        key=f"execution.failed:{execution.pk}",
        payload={
            "strategy_id": execution.strategy_id,
            "execution_id": execution.pk,
            "interval_start": execution.interval_start,
            "trigger": execution.trigger,
            "code_version": execution.code_version,
            "settings_version": execution.settings_version,
            "error": execution.error[:2000],
            "line": int(line.group(1)) if line else None,
        },
    )
    try:
        with transaction.atomic():
            notifications_record(notices=[notice])
    except Exception:
        logger.exception("could not notify the failure of execution %s", execution.pk)


def _finish_unrecordable(execution: StrategyExecution, *, cause: str) -> None:
    """Fail the execution with only values that are always storable (the result is dropped:
    any of its fields may be what the database refused)."""
    execution.status = Status.FAILED
    execution.error = f"internal error: could not record result: {cause}"
    execution.signal, execution.logs = None, ""
    with transaction.atomic():
        StrategyExecution.objects.filter(pk=execution.pk, attempts=execution.attempts).update(
            status=execution.status,
            error=execution.error,
            signal=None,
            logs="",
            finished_at=execution.finished_at,
            duration_ms=execution.duration_ms,
        )
        _notify_failed(execution)


def _announce(execution: StrategyExecution) -> None:
    if execution.status == Status.FAILED:
        event_emit(
            EventType.EXECUTION_ERROR,
            execution_id=execution.pk,
            strategy_id=execution.strategy_id,
            error=execution.error[:500],
        )
    else:
        event_emit(
            EventType.EXECUTION_COMPLETE,
            execution_id=execution.pk,
            strategy_id=execution.strategy_id,
            status=execution.status,
            signal=execution.signal,
        )


def _missing_candle_reason(exchange: str) -> str:
    if candles_fetchable(exchange=exchange):
        return (
            "the closed candle for this interval did not reach the candle store "
            f"within {settings.CANDLE_SETTLE_S:g} s"
        )
    # Nothing was waited for: this exchange's candles come only from imports or the streamer.
    return (
        "the closed candle for this interval did not reach the candle store "
        f"({exchange} candles are not fetched: they come from imports or the stream)"
    )


def _strategy_settings(strategy: Strategy) -> dict:
    # Only the strategy's own settings reach its code: never subscriber data or secrets.
    return dict(strategy.settings or {})


def _check_stops(execution: StrategyExecution, candle: list[float]) -> None:
    try:
        trades_check_stops(
            execution=execution,
            open_price=Decimal(str(candle[1])),
            high=Decimal(str(candle[2])),
            low=Decimal(str(candle[3])),
        )
    except Exception:  # stop checks must never stop the strategy from running
        logger.exception("stop checks failed for execution %s", execution.pk)


Market = tuple[str, str, str]


def _market(strategy: Strategy) -> Market:
    return strategy.exchange, strategy.symbol, strategy.resolution


@dataclass
class CloseReads:
    """The candles a close's strategies share, read once per market and close instead of once
    per strategy: whether the closed candle reached the store (waited for once: a candle that
    never came is not waited for again by the next strategy) and the window before it, as long
    as the longest lookback of the strategies given."""

    lookbacks: dict[Market, int] = field(default_factory=dict)
    _settled: dict[tuple[Market, datetime], datetime | None] = field(default_factory=dict)
    _windows: dict[tuple[Market, datetime], list[list[float]]] = field(default_factory=dict)

    @classmethod
    def for_strategies(cls, strategies: Iterable[Strategy]) -> CloseReads:
        reads = cls()
        for strategy in strategies:
            market = _market(strategy)
            reads.lookbacks[market] = max(reads.lookbacks.get(market, 0), strategy.lookback)
        return reads

    def available_at(self, strategy: Strategy, *, interval_start: datetime) -> datetime | None:
        key = (_market(strategy), interval_start)
        if key not in self._settled:
            self._settled[key] = candles_settle(
                exchange=strategy.exchange,
                symbol=strategy.symbol,
                resolution=strategy.resolution,
                interval_start=interval_start,
            )
        return self._settled[key]

    def window(self, strategy: Strategy, *, close_time: datetime) -> list[list[float]]:
        """The strategy's last ``lookback`` closed candles (the shared read, cut)."""
        market = _market(strategy)
        key = (market, close_time)
        if key not in self._windows:
            self._windows[key] = candles_closed_window(
                exchange=strategy.exchange,
                symbol=strategy.symbol,
                resolution=strategy.resolution,
                close_time=close_time,
                limit=max(self.lookbacks.get(market, 0), strategy.lookback),
            )
        rows = self._windows[key]
        return rows[max(0, len(rows) - strategy.lookback) :]


def _run(execution: StrategyExecution, strategy: Strategy, reads: CloseReads) -> list[float] | None:
    """Run the strategy on the closed candle; returns that candle once read (None before)."""
    # The sandbox is set up while the candles and stops are read from the database.
    prepare_sandbox(
        require_isolation=settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
        isolation_mode=settings.STRATEGY_SANDBOX_ISOLATION,
    )
    event_emit(
        EventType.EXECUTION_START,
        execution_id=execution.pk,
        strategy_id=strategy.pk,
        interval_start=execution.interval_start.isoformat(),
    )
    # Never run on a partial candle: wait (bounded) for the closed one, fetched over REST.
    available_at = reads.available_at(strategy, interval_start=execution.interval_start)
    if available_at is None:
        execution_finish(
            execution=execution,
            status=Status.SKIPPED,
            error=_missing_candle_reason(strategy.exchange),
        )
        return None
    candles = reads.window(strategy, close_time=execution.interval_end)
    last = candles[-1]
    execution.close_price = Decimal(str(last[4]))
    execution.data_available_at = available_at
    execution.candles_used = len(candles)
    # Stops protect open trades on every closed candle, warmed up or not.
    _check_stops(execution, last)
    if len(candles) < strategy.lookback:
        # A short window only gives indicators of NaN (a HOLD that looks like a verdict), or a
        # signal computed on less history than the author asked for: the strategy waits.
        execution_finish(
            execution=execution,
            status=Status.SKIPPED,
            error=f"warming up: {len(candles)} of {strategy.lookback} candles",
        )
        return last
    timeout = min(strategy.timeout_s, settings.STRATEGY_MAX_TIMEOUT_S)
    result = run_strategy(
        code=strategy.code,
        candles=candles,
        settings=_strategy_settings(strategy),
        timeout_s=timeout,
        memory_mb=settings.STRATEGY_MEMORY_MB,
        lookback=strategy.lookback,
        require_isolation=settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
        isolation_mode=settings.STRATEGY_SANDBOX_ISOLATION,
    )
    execution.logs, execution.sandbox_isolation = result.logs, result.isolation
    outcome = "ok" if result.ok else "failed"
    SANDBOX_DURATION.labels(isolation=result.isolation, outcome=outcome).observe(
        result.duration_ms / 1000
    )
    if not result.ok:
        execution_finish(execution=execution, status=Status.FAILED, error=result.error)
        return last
    try:
        signal = signal_parse(result.value, market_price=execution.close_price)
    except InvalidSignal as exc:
        execution_finish(execution=execution, status=Status.FAILED, error=f"invalid signal: {exc}")
        return last
    status = Status.NO_SIGNAL if signal.type == "HOLD" else Status.SUCCESS
    execution_finish(execution=execution, status=status, signal=signal.to_json())
    return last


def _follow_record(execution: StrategyExecution, candle: list[float] | None) -> None:
    """Feed the strategy's track record with this close: never at the execution's expense."""
    if candle is None or execution.status == Status.RUNNING:
        return
    try:
        record_follow(execution=execution, candle=candle)
    except Exception:  # the record is a view of the strategy, not part of running it
        logger.exception("the track record could not follow execution %s", execution.pk)


def _fanout_chunk_size(count: int) -> int:
    """Subscribers per fan-out task: a batch pays its fixed costs (task, queries, one round
    of concurrent exchange calls) once, so a large fan-out is cut into about
    FANOUT_TARGET_TASKS batches, each between FANOUT_CHUNK_SIZE and FANOUT_CHUNK_MAX."""
    wanted = -(-count // max(1, settings.FANOUT_TARGET_TASKS))
    return max(1, settings.FANOUT_CHUNK_SIZE, min(wanted, settings.FANOUT_CHUNK_MAX))


def execution_dispatch_fanout(*, execution: StrategyExecution, inline: bool = False) -> int:
    """Queue the fan-out of an actionable signal; safe to call again after a crash.

    ``inline`` runs it in this process instead (operators' one-off runs).
    """
    if execution.status != Status.SUCCESS or execution.fanout_dispatched_at is not None:
        return 0
    signal = Signal.from_json(execution.signal or {"signal": "HOLD"})
    targets = fanout_targets(strategy_id=execution.strategy_id, signal=signal)
    strategy = execution.strategy
    FANOUT_SIZE.labels(exchange=strategy.exchange, resolution=strategy.resolution).observe(
        len(targets)
    )
    size = _fanout_chunk_size(len(targets))
    chunks = [targets[i : i + size] for i in range(0, len(targets), size)]
    StrategyExecution.objects.filter(pk=execution.pk).update(
        fanout_total=len(targets), subscriber_count=len(targets)
    )
    for chunk in chunks:
        if inline:
            fanout_process(execution_id=execution.pk, subscription_ids=chunk)
        else:
            fanout_orders.apply_async(
                kwargs={"execution_id": execution.pk, "subscription_ids": chunk},
                queue=settings.FANOUT_QUEUE,
            )
    # Marked after sending: a crash in between re-sends, and the fan-out is idempotent.
    StrategyExecution.objects.filter(pk=execution.pk).update(fanout_dispatched_at=timezone.now())
    return len(targets)


def _timing_gate(*, strategy: Strategy, interval_end: datetime, trigger: str) -> RunOutcome | None:
    if trigger not in (Trigger.BEAT, Trigger.STREAM):
        return None  # operators and replays run past candles on purpose
    if trigger == Trigger.BEAT and interval_end > market_now():
        return RunOutcome("not_closed", detail="the candle has not closed yet")
    # Staleness is judged in real seconds since the close, under a replay clock too.
    real_end = market_to_real(interval_end)
    ok, _, reason = validate_execution_timing(
        real_end,
        max(timezone.now(), real_end),
        strategy.resolution,
        max_drift_s=settings.EXECUTION_MAX_DRIFT_S,
    )
    return None if ok else RunOutcome("stale", detail=reason)


def execution_run(
    *,
    strategy_id: int,
    interval_start: datetime,
    trigger: str = Trigger.BEAT,
    scheduled_at: datetime | None = None,
    inline_fanout: bool = False,
) -> RunOutcome:
    """Run a strategy once for the candle that opened at ``interval_start``."""
    strategy = Strategy.objects.get(pk=strategy_id)
    return _execution_run(
        strategy=strategy,
        interval_start=interval_start,
        trigger=trigger,
        scheduled_at=scheduled_at,
        inline_fanout=inline_fanout,
        reads=CloseReads.for_strategies([strategy]),
    )


def executions_run(
    *,
    strategy_ids: list[int],
    interval_start: datetime,
    trigger: str = Trigger.BEAT,
    scheduled_at: datetime | None = None,
) -> list[RunOutcome]:
    """Run several strategies once each for the candle that opened at ``interval_start``.

    Each is an execution of its own, as :func:`execution_run` makes it (its lock, its row and
    its fence); what they share is read once: the strategies, and each market's candles. A
    failure of one is raised only after the others ran (a retry finds those done). A strategy
    that runs longer than EXECUTION_HANDOFF_S hands the batch's rest to a task of its own, so
    one slow or spinning strategy holds up no other tenant's execution for longer than that.
    Returns the outcomes of the strategies this call ran."""
    strategies = Strategy.objects.in_bulk(strategy_ids)
    reads = CloseReads.for_strategies(strategies.values())
    rest = _BatchRest(
        strategy_ids, interval_start=interval_start, trigger=trigger, scheduled_at=scheduled_at
    )
    outcomes: list[RunOutcome] = []
    first_error: Exception | None = None
    while (strategy_id := rest.next()) is not None:
        strategy = strategies.get(strategy_id)
        if strategy is None:
            outcomes.append(RunOutcome("inactive", detail="the strategy no longer exists"))
            continue
        try:
            with rest.handed_off_after(settings.EXECUTION_HANDOFF_S):
                outcome = _execution_run(
                    strategy=strategy,
                    interval_start=interval_start,
                    trigger=trigger,
                    scheduled_at=scheduled_at,
                    inline_fanout=False,
                    reads=reads,
                )
        except Exception as exc:  # the batch's other strategies still run
            logger.exception("execution of strategy %s failed", strategy_id)
            first_error = first_error or exc
            continue
        outcomes.append(outcome)
    if first_error is not None:
        raise first_error
    return outcomes


class _BatchRest:
    """The strategies of a batch not started yet, and their hand-off to a task of their own."""

    def __init__(
        self,
        strategy_ids: list[int],
        *,
        interval_start: datetime,
        trigger: str,
        scheduled_at: datetime | None,
    ) -> None:
        self._ids = list(strategy_ids)
        self._lock = threading.Lock()
        self._kwargs = {
            "interval_start": interval_start.isoformat(),
            "trigger": trigger,
            "scheduled_at": scheduled_at.isoformat() if scheduled_at else None,
        }

    def next(self) -> int | None:
        with self._lock:
            return self._ids.pop(0) if self._ids else None

    @contextmanager
    def handed_off_after(self, seconds: float) -> Iterator[None]:
        """While one strategy runs: once it has taken ``seconds``, the rest is queued."""
        timer = threading.Timer(seconds, self.hand_off)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def hand_off(self) -> None:
        from execution.tasks import execute_strategies

        with self._lock:
            rest, self._ids = self._ids, []
        if rest:  # a strategy handed off twice (a redelivery) is fenced like any duplicate
            logger.info("a slow strategy hands %d of its batch to another task", len(rest))
            execute_strategies.apply_async(kwargs={"strategy_ids": rest, **self._kwargs})


def _execution_run(
    *,
    strategy: Strategy,
    interval_start: datetime,
    trigger: str,
    scheduled_at: datetime | None,
    inline_fanout: bool,
    reads: CloseReads,
) -> RunOutcome:
    if round_to_interval_boundary(interval_start, strategy.resolution) != interval_start:
        raise ValueError(f"{interval_start.isoformat()} is not a {strategy.resolution} boundary")
    interval_end = interval_start + resolution_to_timedelta(strategy.resolution)
    gate = _timing_gate(strategy=strategy, interval_end=interval_end, trigger=trigger)
    if gate is not None and gate.outcome == "not_closed":
        return gate
    if strategy.status != Strategy.Status.ACTIVE or strategy.subscriber_count == 0:
        return RunOutcome("inactive", detail="strategy has no active subscribers")
    key = strategy_run_lock_key(
        strategy_id=strategy.pk,
        interval_key=format_interval_key(interval_start, strategy.resolution),
    )
    ttl = compute_lock_ttl(strategy.resolution, execution_timeout_s=strategy.timeout_s)
    with redis_lock(key=key, ttl_s=ttl) as token:
        if token is None:
            return RunOutcome("locked", detail="another worker is running this candle")
        return _run_locked(
            strategy=strategy,
            interval_start=interval_start,
            trigger=trigger,
            scheduled_at=scheduled_at,
            stale=gate,
            inline_fanout=inline_fanout,
            reads=reads,
        )


def _run_locked(
    *,
    strategy: Strategy,
    interval_start: datetime,
    trigger: str,
    scheduled_at: datetime | None,
    stale: RunOutcome | None,
    inline_fanout: bool,
    reads: CloseReads,
) -> RunOutcome:
    execution, created = _claim_row(
        strategy=strategy, interval_start=interval_start, trigger=trigger, scheduled_at=scheduled_at
    )
    ids = {"strategy_id": strategy.pk, "interval_start": interval_start}
    with log_context(execution_id=execution.pk, **ids):
        if not created and not (execution.status == Status.RUNNING and _take_over(execution)):
            return _duplicate(execution, strategy, trigger=trigger, inline_fanout=inline_fanout)
        try:
            return _run_claimed(
                execution, strategy, stale=stale, inline_fanout=inline_fanout, reads=reads
            )
        except ExecutionTakenOver as exc:
            # The taker records, fans out and follows the record: this worker must do none of it.
            logger.warning("%s", exc)
            return RunOutcome("taken_over", execution.pk, str(exc))


def _duplicate(
    execution: StrategyExecution, strategy: Strategy, *, trigger: str, inline_fanout: bool
) -> RunOutcome:
    if trigger == Trigger.BEAT and execution.trigger == Trigger.STREAM:
        BEAT_FOUND_DONE.labels(exchange=strategy.exchange, resolution=strategy.resolution).inc()
    # Finishes a fan-out that a crash cut short; a no-op when it was dispatched.
    execution_dispatch_fanout(execution=execution, inline=inline_fanout)
    return RunOutcome("duplicate", execution.pk, "this candle was executed already")


def _run_claimed(
    execution: StrategyExecution,
    strategy: Strategy,
    *,
    stale: RunOutcome | None,
    inline_fanout: bool,
    reads: CloseReads,
) -> RunOutcome:
    if stale is not None:
        execution_finish(
            execution=execution, status=Status.SKIPPED, error=f"stale trigger: {stale.detail}"
        )
        return RunOutcome("ran", execution.pk, stale.detail)
    candle = None
    try:
        candle = _run(execution, strategy, reads)
    except ExecutionTakenOver:
        raise
    except Exception as exc:  # record every failure on the execution, never leave it running
        logger.exception("execution %s failed", execution.pk)
        execution_finish(
            execution=execution,
            status=Status.FAILED,
            error=f"internal error: {type(exc).__name__}: {exc}",
        )
    execution_dispatch_fanout(execution=execution, inline=inline_fanout)
    # After the fan-out is on its way, so subscribers' orders never wait for the record.
    _follow_record(execution, candle)
    return RunOutcome("ran", execution.pk)


def candle_close_dispatch(
    *,
    resolution: str,
    close_time: datetime | None = None,
    trigger: str = Trigger.BEAT,
    exchange: str | None = None,
    symbol: str | None = None,
) -> list[int]:
    """Queue one execution per registered strategy for each candle just closed.

    Beat covers every market of ``resolution``; the streamer names its market. A beat message
    without a close time covers every close since the previous beat run (see
    :func:`beat_closes_due`), so a message that waited past the next boundary loses no close.
    Returns the strategy ids queued, once per close.
    """
    if close_time is None and trigger == Trigger.BEAT:
        now_close = round_to_interval_boundary(market_now(), resolution)
        closes = beat_closes_due(resolution=resolution, close_time=now_close)
    else:
        closes = [round_to_interval_boundary(close_time or market_now(), resolution)]
    queued: list[int] = []
    for close in closes:
        queued += _close_dispatch(
            resolution=resolution,
            close_time=close,
            trigger=trigger,
            exchange=exchange,
            symbol=symbol,
        )
    return queued


def _close_dispatch(
    *, resolution: str, close_time: datetime, trigger: str, exchange: str | None, symbol: str | None
) -> list[int]:
    """Queue the executions of one close.

    While a streamer is alive, beat's executions wait ``STREAM_BEAT_GRACE_S`` so the streamer
    goes first and beat only fills in what it missed (finding the rest done, fenced by the
    unique constraint).
    """
    from execution.streaming.services import streamer_alive
    from execution.tasks import execute_strategies, execute_strategy

    interval_start = close_time - resolution_to_timedelta(resolution)
    markets = _registered(resolution=resolution, exchange=exchange, symbol=symbol)
    event_emit(
        EventType.CANDLE_CLOSE,
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        interval_start=interval_start.isoformat(),
        close_time=close_time.isoformat(),
        trigger=trigger,
    )
    grace = settings.STREAM_BEAT_GRACE_S if trigger == Trigger.BEAT and streamer_alive() else 0
    common = {
        "interval_start": interval_start.isoformat(),
        "trigger": trigger,
        "scheduled_at": close_time.isoformat(),
    }
    queued: list[int] = []
    for strategy_ids in markets:
        for chunk in _execution_chunks(strategy_ids):
            if len(chunk) == 1:
                kwargs: dict[str, Any] = {"strategy_id": chunk[0], **common}
                execute_strategy.apply_async(kwargs=kwargs, countdown=grace or None)
            else:
                kwargs = {"strategy_ids": chunk, **common}
                execute_strategies.apply_async(kwargs=kwargs, countdown=grace or None)
        queued += strategy_ids
    return sorted(queued)


def _execution_chunks(strategy_ids: list[int]) -> list[list[int]]:
    """One market's strategies cut into about EXECUTION_TARGET_TASKS batches of at most
    EXECUTION_CHUNK_MAX: a batch shares its task and its candle reads."""
    wanted = -(-len(strategy_ids) // max(1, settings.EXECUTION_TARGET_TASKS))
    size = max(1, min(wanted, settings.EXECUTION_CHUNK_MAX))
    return [strategy_ids[i : i + size] for i in range(0, len(strategy_ids), size)]


def _registered(*, resolution: str, exchange: str | None, symbol: str | None) -> list[list[int]]:
    """The registered strategy ids of the close, market by market."""
    if exchange is None or symbol is None:
        return list(registry_strategy_ids_by_market(resolution=resolution).values())
    key = market_key(exchange=exchange, symbol=symbol, resolution=resolution)
    return [sorted(registry_strategy_ids(key=key))]


def interval_start_for_close(*, close_time: datetime, resolution: str) -> datetime:
    return round_to_interval_boundary(close_time, resolution) - resolution_to_timedelta(resolution)
