"""Session benchmark: a backtest's generate_signal calls through one sandbox session against
the same calls in a plain loop in this process (``build_frame`` per window, no sandbox).

    python -m strategies.sandbox.bench_session [--candles FILE.json] [--runs N] [--mode M]

FILE.json holds ccxt OHLCV rows (default: 5,760 synthetic 5-minute candles). Each strategy
gets one step per candle, no history; every figure is the best of ``--runs`` (the machine's
other load only ever adds time). Importable without Django."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import child, zygote_client
from .samples import synthetic_candles
from .session import strategy_session

TRIVIAL = "def generate_signal(candles, settings):\n    return None\n"
SMA = """
LOOKBACK = 50


def generate_signal(candles, settings):
    close = candles["close"]
    if len(close) < 31:
        return None
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    price = float(close.iloc[-1])
    if fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]:
        return {"signal": "LONG", "price": price, "stopLoss": price * 0.98,
                "takeProfit": price * 1.04}
    if fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]:
        return {"signal": "EXIT_LONG", "price": price}
    return None
"""
STRATEGIES = {"trivial": (TRIVIAL, child.DEFAULT_LOOKBACK), "sma(10,30)": (SMA, 50)}


@dataclass(frozen=True)
class Figures:
    name: str
    steps: int
    session_s: float  # wall time of the whole session, start and end included
    plain_s: float  # the same calls in a plain loop
    child_cpu_s: float  # CPU of the session's sandbox processes

    @property
    def ratio(self) -> float:
        return self.session_s / self.plain_s

    def line(self) -> str:
        per_step = 1e6 / self.steps
        return (
            f"{self.name:<11} {self.steps:>6} steps  session {self.session_s:6.2f} s "
            f"({self.session_s * per_step:4.0f} us/step, sandbox CPU {self.child_cpu_s:5.2f} s)  "
            f"plain loop {self.plain_s:6.2f} s ({self.plain_s * per_step:4.0f} us/step)  "
            f"x{self.ratio:.2f}"
        )


def bench(*, candles: list[list[float]], runs: int, mode: str) -> list[Figures]:
    """One Figures per strategy, the best of ``runs`` for each side (interleaved)."""
    zygote_client.get_zygote(mode)  # started once, as in a worker
    figures = []
    for name, (code, lookback) in STRATEGIES.items():
        sessions, plains = [], []
        for _ in range(runs):
            sessions.append(_session(code, candles, mode))
            plains.append(_timed(lambda: _plain_loop(code, candles, lookback)))  # noqa: B023
        best = min(sessions)
        figures.append(Figures(name, len(candles), best[0], min(plains), best[1]))
    return figures


def _session(code: str, candles: list[list[float]], mode: str) -> tuple[float, float]:
    """-> (wall seconds, sandbox CPU seconds) of one session over ``candles``."""
    started = time.perf_counter()
    with strategy_session(code=code, settings={}, history=[], isolation_mode=mode) as session:
        for row in candles:
            result = session.step([row])
            if not result.ok:
                raise RuntimeError(f"benchmark strategy failed: {result.error}")
    return time.perf_counter() - started, session.cpu_ms / 1000.0


def _plain_loop(code: str, candles: list[list[float]], lookback: int) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(code, child.STRATEGY_FILENAME, "exec"), namespace)
    generate_signal = namespace["generate_signal"]
    rows = np.asarray(candles, dtype="<f8")
    for end in range(1, len(rows) + 1):
        window = rows[max(0, end - lookback) : end].tobytes()
        generate_signal(child.build_frame(window, lookback), {})


def _timed(func: Callable[[], None]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", help="a JSON file of ccxt OHLCV rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", default="rlimit", choices=("bwrap", "rlimit"))
    args = parser.parse_args(argv)
    if args.candles:
        with open(args.candles) as fh:
            candles = json.load(fh)
    else:
        candles = synthetic_candles(count=5760, step_ms=300_000, end_ms=1_700_000_000_000)
    print(f"session vs plain loop, {args.mode}, best of {args.runs}")
    for figures in bench(candles=candles, runs=args.runs, mode=args.mode):
        print(figures.line())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
