"""Sandboxed execution of user-supplied trading strategies.

Parent-side API (importable without Django configured)::

    run_strategy(code=..., candles=..., settings=...) -> SandboxResult
    dry_run(code=..., candles=..., settings=...) -> SandboxResult
    inspect_code(code) -> CodeCheck
"""

from .codecheck import inspect_code
from .result import CodeCheck, SandboxResult
from .runner import dry_run, run_strategy

__all__ = ["CodeCheck", "SandboxResult", "dry_run", "inspect_code", "run_strategy"]
