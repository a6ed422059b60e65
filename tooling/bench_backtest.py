"""Backtest speed (``manage.py bench_backtest``): candles per second, against the floor.

The floor is what no backtest can beat: the same ``generate_signal`` called in a plain loop in
this process (no sandbox, no account, no database) on the same windows, each built as the
sandbox builds it (``child.build_frame`` on the newest LOOKBACK rows). The backtest is the
whole thing a user runs: ``backtest_run`` with its sandbox session, the account on paper's
rules, and the result written to the database. The vectorised path runs ``generate_signals``
once; its look-ahead check (``generate_signal`` on history cut at a sample of candles) is
timed apart.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model

from backtests.engine import Sizing
from backtests.models import Backtest
from backtests.services import Costs, Period, Subject, backtest_create, backtest_run
from markets.candles import candles_between
from markets.market_data import market_data_load
from markets.models import Candle
from strategies.sandbox import strategy_session
from strategies.sandbox.child import build_frame

EXCHANGE, SYMBOL, RESOLUTION = "binance", "ETH/BTC", "5m"
BENCH_USER = "bench-backtest"
SMA_10_30 = """
import numpy as np
LOOKBACK = 50

def generate_signal(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    if np.isnan(slow.iloc[-2]):
        return None
    price = float(close.iloc[-1])
    if fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]:
        return {"signal": "LONG", "stopLoss": price * 0.99, "takeProfit": price * 1.02}
    if fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]:
        return {"signal": "EXIT_LONG"}
    return None

def generate_signals(candles, settings):
    close = candles["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    up = ((fast.shift(1) <= slow.shift(1)) & (fast > slow)).to_numpy()
    down = ((fast.shift(1) >= slow.shift(1)) & (fast < slow)).to_numpy()
    return [
        {"signal": "LONG", "stopLoss": p * 0.99, "takeProfit": p * 1.02} if u
        else ({"signal": "EXIT_LONG"} if d else None)
        for u, d, p in zip(up, down, close.to_numpy().tolist())
    ]
"""


def bench(*, runs: int, write: Callable[[str], None]) -> dict[str, float]:
    """Each figure is the best of ``runs``, the runs interleaved so that a machine busy for a
    while slows the floor and the backtests alike."""
    loaded = market_data_load(exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION, count=5760)
    rows = _stored_rows()
    write(f"market: {EXCHANGE} {SYMBOL} {RESOLUTION}, {len(rows)} candles ({loaded.source})")
    lookback, traded = 50, len(rows) - 49
    best: dict[str, float] = {}
    done: dict[str, Backtest] = {}
    for _ in range(runs):
        _keep(best, "floor", _floor_s(rows, lookback))
        _keep(best, "load", _load_s())
        _keep(best, "session", _session_s(rows, lookback))
        for method in Backtest.Method.values:
            backtest = _backtest(method)
            if _keep(best, method, (backtest.duration_ms or 0) / 1000):
                done[method] = backtest
    floor = best["floor"]
    write(
        f"floor: plain loop, one process, {traded} windows: {floor:.3f} s = "
        f"{traded / floor:,.0f} candles/s (best of {runs})"
    )
    write(
        f"parts: loading the candles from the store {best['load']:.3f} s; the sandbox session "
        f"alone (generate_signal at each close, no account, no database) {best['session']:.3f} s"
        f" = {best['session'] / floor:.2f}x the floor"
    )
    for method, backtest in done.items():
        seconds = best[method]
        check = (backtest.lookahead or {}).get("checked", 0)
        write(
            f"backtest {method}: {seconds:.3f} s = {backtest.candles_done / seconds:,.0f} "
            f"candles/s, {seconds / floor:.2f}x the floor; {backtest.metrics.get('trades')} "
            f"trades, sandbox {backtest.sandbox_isolation}"
            + (f", look-ahead check of {check} candles included" if check else "")
        )
    return best


def _keep(best: dict[str, float], name: str, seconds: float) -> bool:
    """Record ``seconds`` if it is the best so far for ``name``."""
    if seconds < best.get(name, float("inf")):
        best[name] = seconds
        return True
    return False


def _stored_rows() -> list[list[float]]:
    return [
        [int(t.timestamp() * 1000), float(o), float(h), float(lo), float(c), float(v)]
        for t, o, h, lo, c, v in Candle.objects.filter(
            exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION
        )
        .order_by("open_time")
        .values_list("open_time", "open", "high", "low", "close", "volume")
    ]


def _floor_s(rows: list[list[float]], lookback: int) -> float:
    module = types.ModuleType("bench_strategy")
    exec(compile(SMA_10_30, "<bench>", "exec"), module.__dict__)
    generate_signal: Any = module.__dict__["generate_signal"]
    packed = np.asarray(rows, dtype="<f8")
    started = time.perf_counter()
    for end in range(lookback, len(rows) + 1):
        window = build_frame(packed[end - lookback : end].tobytes(), lookback)
        generate_signal(window, {})
    return time.perf_counter() - started


def _load_s() -> float:
    started = time.perf_counter()
    candles_between(
        exchange=EXCHANGE,
        symbol=SYMBOL,
        resolution=RESOLUTION,
        start=datetime(2000, 1, 1, tzinfo=UTC),
        end=datetime(2100, 1, 1, tzinfo=UTC),
        limit=10**6,
    )
    return time.perf_counter() - started


def _session_s(rows: list[list[float]], lookback: int) -> float:
    started = time.perf_counter()
    with strategy_session(
        code=SMA_10_30, settings={}, history=rows[: lookback - 1], lookback=lookback
    ) as session:
        for row in rows[lookback - 1 :]:
            if not session.step([row]).ok:
                raise RuntimeError(f"the session failed: {session.error}")
    return time.perf_counter() - started


def _backtest(method: str) -> Backtest:
    owner, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    backtest = backtest_create(
        owner=owner,
        subject=Subject(code=SMA_10_30, exchange=EXCHANGE, symbol=SYMBOL, resolution=RESOLUTION),
        period=Period(),
        sizing=Sizing(Decimal("1"), Decimal("0.01"), Decimal("1")),
        costs=Costs(),
        method=method,
    )
    backtest = backtest_run(backtest_id=backtest.pk)
    if backtest.status != Backtest.Status.DONE:
        raise RuntimeError(f"backtest {method} failed: {backtest.error}")
    return backtest
