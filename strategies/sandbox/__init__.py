"""Sandboxed execution of user-supplied trading strategies.

Parent-side API (importable without Django configured)::

    prepare_sandbox()  # an execution is coming: set its sandbox up meanwhile
    sandbox_warm()  # a worker process starts: its zygote and a prepared spare, ahead
    run_strategy(code=..., candles=..., settings=...) -> SandboxResult
    dry_run(code=..., candles=..., settings=...) -> SandboxResult
    run_signals(code=..., candles=..., settings=...) -> SandboxResult  # generate_signals
    with strategy_session(code=..., settings=..., history=...) as session:
        session.step(rows) -> StepResult  # one generate_signal per close (backtests)
    inspect_code(code) -> CodeCheck
"""

from .codecheck import inspect_code
from .result import CodeCheck, SandboxResult, StepResult
from .runner import dry_run, prepare_sandbox, run_signals, run_strategy, sandbox_warm
from .session import StrategySession, strategy_session

__all__ = [
    "CodeCheck",
    "SandboxResult",
    "StepResult",
    "StrategySession",
    "dry_run",
    "inspect_code",
    "prepare_sandbox",
    "run_signals",
    "run_strategy",
    "sandbox_warm",
    "strategy_session",
]
