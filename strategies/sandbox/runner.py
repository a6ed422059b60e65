"""Public parent-side API: run a strategy in the sandbox and interpret what happened.

Importable without Django being configured: settings come in as arguments."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from . import isolation
from .process import run_in_subprocess
from .protocol import (
    RawOutcome,
    RequestError,
    build_request,
    describe_exit,
    format_logs,
    parse_result,
)
from .result import SandboxResult
from .zygote_client import ZygoteError, discard_zygote, get_zygote

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
    if require_isolation is None:
        require_isolation = _env_flag("STRATEGY_SANDBOX_REQUIRE_ISOLATION")
    requested = isolation_mode or os.environ.get("STRATEGY_SANDBOX_ISOLATION") or "auto"
    mode, refusal = choose_mode(require_isolation, requested)
    if refusal:
        return SandboxResult(False, None, refusal, "", _ms_since(started), mode, True)
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        error = f"invalid timeout: {timeout_s!r} (expected 0 < timeout <= {MAX_TIMEOUT_S})"
        return SandboxResult(False, None, error, "", _ms_since(started), mode, True)
    try:
        payload = build_request(
            code=code,
            candles=candles,
            settings=settings,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            lookback=lookback,
            read_paths=isolation.landlock_read_paths() if mode in ("rlimit", "cold") else [],
        )
    except RequestError as exc:
        return SandboxResult(False, None, str(exc), "", _ms_since(started), mode)
    outcome, mode = execute(payload, timeout_s, mode, require_isolation)
    return interpret(outcome, timeout_s, started, mode)


def execute(
    payload: bytes, timeout_s: float, mode: str, require_isolation: bool
) -> tuple[RawOutcome, str]:
    """Run one request on this process's zygote -> (outcome, mode actually used).

    A zygote that is gone when the request is sent is replaced and the request sent once
    more. A bubblewrap zygote that cannot start marks bubblewrap unusable for this process
    (rlimit from then on, unless isolation is required); an rlimit zygote that cannot start
    falls back to one cold process per execution."""
    if mode == "cold":
        return run_in_subprocess(payload, timeout_s), "rlimit"
    for attempt in range(2):
        try:
            zygote = get_zygote(mode)
        except ZygoteError as exc:
            return _zygote_unavailable(payload, timeout_s, mode, require_isolation, str(exc))
        try:
            return zygote.run(payload, timeout_s), mode
        except ZygoteError as exc:
            discard_zygote(zygote)
            if attempt:
                return RawOutcome(error=str(exc)), mode
    raise AssertionError("unreachable")


def _zygote_unavailable(
    payload: bytes, timeout_s: float, mode: str, require_isolation: bool, reason: str
) -> tuple[RawOutcome, str]:
    if mode == "bwrap":
        isolation.mark_bwrap_unusable(reason)
        if require_isolation:
            error = f"isolation required but bubblewrap is not usable: {reason}"
            return RawOutcome(error=error), mode
        isolation.warn_once_unisolated(reason)
        return execute(payload, timeout_s, "rlimit", require_isolation)
    logger.warning("strategy sandbox: zygote unavailable (%s); using cold processes", reason)
    return run_in_subprocess(payload, timeout_s), "rlimit"


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
    outcome: RawOutcome, timeout_s: float, started: float, isolation: str
) -> SandboxResult:
    child_dropped = 0
    sandbox_failure = False
    if outcome.timed_out:
        ok, value, error = False, None, f"timeout after {float(timeout_s)} s"
    elif outcome.result:
        ok, value, error, child_dropped = parse_result(outcome.result)
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
