"""Public parent-side API: run a strategy in the sandbox and interpret what happened.

Importable without Django being configured: settings come in as arguments."""

from __future__ import annotations

import time
from typing import Any

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

DRY_RUN_TIMEOUT_S = 30.0


def run_strategy(
    *,
    code: str,
    candles: list[list[float]],
    settings: dict[str, Any],
    timeout_s: float = 30.0,
    memory_mb: int = 512,
    lookback: int | None = None,
) -> SandboxResult:
    """Execute ``generate_signal(candles, settings)`` from ``code`` in a single-use sandbox."""
    started = time.monotonic()
    isolation = "rlimit"
    try:
        payload = build_request(
            code=code,
            candles=candles,
            settings=settings,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            lookback=lookback,
        )
    except RequestError as exc:
        return SandboxResult(False, None, str(exc), "", _ms_since(started), isolation)
    outcome = run_in_subprocess(payload, timeout_s)
    return interpret(outcome, timeout_s, started, isolation)


def dry_run(*, code: str, candles: list[list[float]], settings: dict[str, Any]) -> SandboxResult:
    """Deploy-time check: same as run_strategy with the default limits."""
    return run_strategy(code=code, candles=candles, settings=settings, timeout_s=DRY_RUN_TIMEOUT_S)


def interpret(
    outcome: RawOutcome, timeout_s: float, started: float, isolation: str
) -> SandboxResult:
    child_dropped = 0
    if outcome.timed_out:
        ok, value, error = False, None, f"timeout after {float(timeout_s)} s"
    elif outcome.result:
        ok, value, error, child_dropped = parse_result(outcome.result)
    elif outcome.error:
        ok, value, error = False, None, outcome.error
    else:
        ok, value, error = False, None, describe_exit(outcome.returncode)
    logs = format_logs(outcome, child_dropped)
    return SandboxResult(ok, value, error, logs, _ms_since(started), isolation)


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
