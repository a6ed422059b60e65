"""The example strategy the README deploys is a valid strategy that trades."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from strategies.sandbox import inspect_code, run_strategy
from strategies.sandbox.samples import synthetic_candles
from strategies.signals import signal_parse

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "sma_crossover.py"
STEP_MS = 5 * 60 * 1000


def test_the_readme_example_passes_the_deploy_checks():
    # given the example strategy file
    code = EXAMPLE.read_text()

    # when it is checked as a deploy checks it
    check = inspect_code(code)

    # then it is accepted with its LOOKBACK
    assert (check.ok, check.error, check.lookback) == (True, "", 60)


def test_the_readme_example_signals_on_a_moving_market():
    # given a synthetic market long enough for some crossings
    code = EXAMPLE.read_text()
    candles = synthetic_candles(count=240, step_ms=STEP_MS, end_ms=240 * STEP_MS)

    # when the strategy runs over each window as executions would run it
    signals = set()
    for end in range(60, 240):
        result = run_strategy(code=code, candles=candles[end - 60 : end], settings={}, lookback=60)
        assert result.ok, result.error
        close = Decimal(str(candles[end - 1][4]))
        signals.add(signal_parse(result.value, market_price=close).type)

    # then it enters and exits, and every signal it gives is valid
    assert {"LONG", "EXIT_LONG"} <= {str(s) for s in signals}
