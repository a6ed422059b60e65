"""Public parent-side API: run a strategy in the sandbox and interpret what happened.

Importable without Django being configured: settings come in as arguments."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Any

from . import child, isolation
from .process import run_in_subprocess
from .protocol import (
    MAX_RESULT_BYTES,
    RawOutcome,
    RequestError,
    build_request,
    describe_exit,
    format_logs,
    pack_all_candles,
    parse_result,
)
from .result import SandboxResult
from .zygote_client import ZygoteError, discard_zygote, get_zygote, live_zygote

logger = logging.getLogger("strategies.sandbox")

DRY_RUN_TIMEOUT_S = 30.0
# Hard ceiling whatever the caller asks (the platform caps lower, STRATEGY_MAX_TIMEOUT_S).
MAX_TIMEOUT_S = 600.0
MODES = ("auto", "bwrap", "rlimit", "cold")
SETUP_FAILED = "sandbox setup failed"


def run_strategy(
    *,
    code: str,
    candles: list[list[float]],
    settings: dict[str, Any],
    timeout_s: float = 30.0,
    memory_mb: int = 512,
    lookback: int | None = None,
    require_isolation: bool | None = None,
    isolation_mode: str | None = None,
) -> SandboxResult:
    """Execute ``generate_signal(candles, settings)`` from ``code`` in a single-use sandbox.

    ``require_isolation`` (default: env STRATEGY_SANDBOX_REQUIRE_ISOLATION) refuses to run
    without bubblewrap. ``isolation_mode`` ('auto' | 'bwrap' | 'rlimit', default: env
    STRATEGY_SANDBOX_ISOLATION or 'auto') forces a level, mainly for tests and benchmarks.
    """
    started = time.monotonic()
    mode, require_isolation, refusal = resolve_mode(require_isolation, isolation_mode)
    refusal = refusal or check_timeout(timeout_s)
    if refusal:
        return SandboxResult(False, None, refusal, "", _ms_since(started), mode, True)
    try:
        payload = build_request(
            code=code,
            candles=candles,
            settings=settings,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            lookback=lookback,
            read_paths=cold_read_paths(mode),
        )
    except RequestError as exc:
        return SandboxResult(False, None, str(exc), "", _ms_since(started), mode)
    outcome, mode = execute(payload, timeout_s, mode, require_isolation)
    return interpret(outcome, timeout_s, started, mode)


def prepare_sandbox(
    *, require_isolation: bool | None = None, isolation_mode: str | None = None
) -> None:
    """An execution is coming (run_strategy or run_signals, same options): have its sandbox
    set up ahead by this process's zygote (its processes forked, namespaces entered, the
    executor confined and warmed up), while the caller reads what the execution needs. The
    next execution uses it, or sets one up itself when there is none. Best effort: never
    raises, and starts no zygote (the first execution of a process does)."""
    mode, _, refusal = resolve_mode(require_isolation, isolation_mode)
    if refusal or mode == "cold":
        return
    zygote = live_zygote(mode)
    if zygote is not None:
        with contextlib.suppress(ZygoteError):
            zygote.prepare()


def sandbox_warm(
    *, require_isolation: bool | None = None, isolation_mode: str | None = None
) -> str:
    """Start this process's zygote (run_strategy's options) and have it prepare a spare, as
    the first execution would: for a worker process that just started (STRATEGY_SANDBOX_WARM),
    so its first close does not wait for them. Returns the mode warmed, '' for none (cold
    processes, isolation refused, no zygote could start: the first execution then finds out
    as it would have). Never raises; the zygote it starts is the one executions use."""
    mode, require_isolation, refusal = resolve_mode(require_isolation, isolation_mode)
    if refusal or mode == "cold":
        return ""
    try:
        zygote = get_zygote(mode)
    except ZygoteError as exc:
        # Falls back as an execution would (bubblewrap marked unusable, rlimit instead).
        fallback = _zygote_unavailable(mode, require_isolation, str(exc))
        if isinstance(fallback, RawOutcome) or fallback == "cold":
            return ""
        return sandbox_warm(require_isolation=require_isolation, isolation_mode=fallback)
    try:
        zygote.prepare()
    except ZygoteError:
        discard_zygote(zygote)  # gone already: the first execution starts another
        return ""
    return mode


def run_signals(
    *,
    code: str,
    candles: list[list[float]],
    settings: dict[str, Any],
    timeout_s: float = 30.0,
    memory_mb: int = 512,
    require_isolation: bool | None = None,
    isolation_mode: str | None = None,
) -> SandboxResult:
    """Execute ``generate_signals(candles, settings)`` once on every row of ``candles`` (at
    most child.MAX_ROWS, no LOOKBACK cut), in a single-use sandbox like run_strategy.

    The value is ``{"signals": [dict | None, ...]}``, one entry per candle. The strategy may
    return a list (one dict or None per row, kept as they are), a pandas Series of signal
    strings, or a DataFrame with a ``signal`` column and optionally ``price``, ``stopLoss``,
    ``takeProfit``; in a Series or DataFrame a missing value (None/NaN) is left out and a
    HOLD (or missing) signal is None. Numbers must be finite; the result may take
    child.RESULT_BYTES_PER_ROW per candle (at least the 1 MiB of run_strategy)."""
    started = time.monotonic()
    mode, require_isolation, refusal = resolve_mode(require_isolation, isolation_mode)
    refusal = refusal or check_timeout(timeout_s)
    if refusal:
        return SandboxResult(False, None, refusal, "", _ms_since(started), mode, True)
    try:
        packed = pack_all_candles(candles)
        rows = len(packed) // child.ROW_BYTES
        limit = child.signals_result_limit(rows)
        payload = build_request(
            code=code,
            candles=None,
            packed=packed,
            settings=settings,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            lookback=None,
            read_paths=cold_read_paths(mode),
            entry="signals",
            result_limit=limit,
        )
    except RequestError as exc:
        return SandboxResult(False, None, str(exc), "", _ms_since(started), mode)
    outcome, mode = execute(payload, timeout_s, mode, require_isolation, limit)
    return _checked_signals(interpret(outcome, timeout_s, started, mode, limit), rows)


def _checked_signals(result: SandboxResult, rows: int) -> SandboxResult:
    """The child says what it sends, but the strategy could have written its own frame."""
    if not result.ok:
        return result
    signals = (result.value or {}).get("signals")
    if _signal_list(signals, rows):
        return result
    error = "invalid result: malformed result frame"
    return dataclasses.replace(result, ok=False, value=None, error=error)


def _signal_list(signals: Any, rows: int) -> bool:
    if not isinstance(signals, list) or len(signals) != rows:
        return False
    return all(entry is None or isinstance(entry, dict) for entry in signals)


def resolve_mode(
    require_isolation: bool | None, isolation_mode: str | None
) -> tuple[str, bool, str]:
    """The caller's options, environment defaults applied -> (mode, isolation required,
    refusal message or '')."""
    if require_isolation is None:
        require_isolation = _env_flag("STRATEGY_SANDBOX_REQUIRE_ISOLATION")
    requested = isolation_mode or os.environ.get("STRATEGY_SANDBOX_ISOLATION") or "auto"
    mode, refusal = choose_mode(require_isolation, requested)
    return mode, require_isolation, refusal


def check_timeout(timeout_s: float) -> str:
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        return f"invalid timeout: {timeout_s!r} (expected 0 < timeout <= {MAX_TIMEOUT_S})"
    return ""


def cold_read_paths(mode: str) -> list[str]:
    """Landlock allow-list sent with a request: only a cold child (no zygote) needs it."""
    return isolation.landlock_read_paths() if mode in ("rlimit", "cold") else []


def execute(
    payload: bytes,
    timeout_s: float,
    mode: str,
    require_isolation: bool,
    result_limit: int = MAX_RESULT_BYTES,
) -> tuple[RawOutcome, str]:
    """Run one request on this process's zygote -> (outcome, mode actually used).

    A zygote that is gone when the request is sent is replaced and the request sent once
    more. A bubblewrap zygote that cannot start marks bubblewrap unusable for this process
    (rlimit from then on, unless isolation is required); an rlimit zygote that cannot start
    falls back to one cold process per execution."""
    if mode == "cold":
        return run_in_subprocess(payload, timeout_s, result_limit), "rlimit"
    for attempt in range(2):
        try:
            zygote = get_zygote(mode)
        except ZygoteError as exc:
            fallback = _zygote_unavailable(mode, require_isolation, str(exc))
            if isinstance(fallback, RawOutcome):
                return fallback, mode
            return execute(payload, timeout_s, fallback, require_isolation, result_limit)
        try:
            return zygote.run(payload, timeout_s, result_limit), mode
        except ZygoteError as exc:
            discard_zygote(zygote)
            if attempt:
                return RawOutcome(error=str(exc)), mode
    raise AssertionError("unreachable")


def _zygote_unavailable(mode: str, require_isolation: bool, reason: str) -> RawOutcome | str:
    """The zygote of ``mode`` cannot start -> the mode to use instead, or the refusal."""
    if mode == "bwrap":
        isolation.mark_bwrap_unusable(reason)
        if require_isolation:
            return RawOutcome(error=f"isolation required but bubblewrap is not usable: {reason}")
        isolation.warn_once_unisolated(reason)
        return "rlimit"
    logger.warning("strategy sandbox: zygote unavailable (%s); using cold processes", reason)
    return "cold"


def choose_mode(require: bool, requested: str) -> tuple[str, str]:
    """-> (mode, refusal message or ''). ``requested``: auto, bwrap, rlimit or cold (the
    per-execution process without a zygote, for benchmarks and as the fallback)."""
    if requested not in MODES:
        return "rlimit", f"invalid isolation mode {requested!r}: expected one of {MODES}"
    usable, reason = isolation.bwrap_status()
    if requested in ("rlimit", "cold") and not require:
        return requested, ""
    if usable:
        return "bwrap", ""
    if require or requested == "bwrap":
        return "rlimit", f"isolation required but bubblewrap is not usable: {reason}"
    isolation.warn_once_unisolated(reason)
    return "rlimit", ""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def dry_run(
    *, code: str, candles: list[list[float]], settings: dict[str, Any], **options: Any
) -> SandboxResult:
    """Deploy-time check: same as run_strategy, by default with the dry-run timeout."""
    options.setdefault("timeout_s", DRY_RUN_TIMEOUT_S)
    return run_strategy(code=code, candles=candles, settings=settings, **options)


def interpret(
    outcome: RawOutcome,
    timeout_s: float,
    started: float,
    isolation: str,
    result_limit: int = MAX_RESULT_BYTES,
) -> SandboxResult:
    child_dropped = 0
    sandbox_failure = False
    if outcome.timed_out:
        ok, value, error = False, None, f"timeout after {float(timeout_s)} s"
    elif outcome.result:
        ok, value, error, child_dropped = parse_result(outcome.result, result_limit)
        sandbox_failure = error.startswith(SETUP_FAILED)  # reported by the executor itself
    elif outcome.error:
        ok, value, error, sandbox_failure = False, None, outcome.error, True
    else:
        ok, value, error = False, None, describe_exit(outcome.returncode)
    logs = format_logs(outcome, child_dropped)
    return SandboxResult(
        ok,
        value,
        error,
        logs,
        _ms_since(started),
        isolation,
        sandbox_failure,
        outcome.child_cpu_s * 1000.0,
    )


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
