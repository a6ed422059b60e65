"""Result types of the strategy sandbox (parent side, no Django)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SandboxResult:
    ok: bool  # True when the child returned one well-formed result
    value: dict[str, Any] | None  # what generate_signal returned (None = HOLD)
    error: str  # '' when ok, otherwise a readable message
    logs: str  # the strategy's print()/stderr output, capped
    duration_ms: float  # wall time of the whole call
    isolation: str  # 'bwrap' or 'rlimit'
    # True when the failure is the platform's (sandbox refused, could not start, died), not
    # something the strategy did: callers must not blame the author for it.
    sandbox_failure: bool = False
    # CPU time of the sandbox processes for this execution (executor, its supervisor or the
    # cold child), when known; the worker's own share is not included.
    cpu_ms: float = 0.0


@dataclass(frozen=True)
class CodeCheck:
    ok: bool
    error: str  # '' when ok
    lookback: int | None  # LOOKBACK when it is a literal int in 1..5000, else None
    line: int | None = None  # line of the problem, when known


@dataclass(frozen=True)
class StepResult:
    """One step of a strategy session (see session.py)."""

    ok: bool  # True when generate_signal returned one well-formed value
    value: dict[str, Any] | None  # what it returned (None = HOLD)
    error: str  # '' when ok, otherwise a readable message
    # True when the failure is the platform's (as SandboxResult.sandbox_failure).
    sandbox_failure: bool = False
