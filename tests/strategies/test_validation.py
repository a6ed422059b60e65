"""Code validation on deploy and on code change, and strategy versions.

Deploying or changing code compiles it and checks the entry point in the calling process, then
has a worker dry-run it in the sandbox on the market's stored candles (synthetic ones when the
store has too few). What the author must fix comes back as a ValidationError on the field
"code" with the message and the line (the API turns it into a 400); every accepted change is a
new immutable StrategyVersion, and each execution records the version it ran.

The dry run's verdicts are checked here by calling the worker's side (``strategy_dry_run``) in
this process, under each isolation level; deploys and code changes go through a real worker.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from core.time_utils import datetime_to_ms
from execution.services import execution_run
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from strategies.sandbox import inspect_code, isolation, zygote_client
from strategies.services import (
    DryRunVerdict,
    StrategyChangedMeanwhile,
    strategy_change_settings,
    strategy_create,
    strategy_deploy,
    strategy_dry_run,
    strategy_dry_run_on_worker,
    strategy_update_code,
    strategy_update_settings,
)
from tests.factories import flat_candles, load_candles, subscribe

pytestmark = pytest.mark.django_db(transaction=True)
MARKET = {"exchange": "binance", "symbol": "ETH/BTC", "resolution": "5m"}

BWRAP_USABLE, BWRAP_REASON = isolation.bwrap_status()
MODES = [
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(not BWRAP_USABLE, reason=f"bwrap: {BWRAP_REASON}")
    ),
    "rlimit",
]
START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)

VALID = """
LOOKBACK = 20

def generate_signal(candles, settings):
    return None
"""


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, settings) -> str:
    settings.STRATEGY_SANDBOX_ISOLATION = request.param
    return str(request.param)


@pytest.fixture(autouse=True, scope="module")
def _stop_zygotes():
    yield
    zygote_client.shutdown()


def deploy(user, code: str, **fields) -> Strategy:
    params = {"name": "checked", "code": code, **MARKET}
    params.update(fields)
    return strategy_create(owner=user, **params)


def check(code: str, settings: dict | None = None) -> DryRunVerdict:
    """The dry run as a worker does it, in this process."""
    lookback = inspect_code(code).lookback or 100
    return strategy_dry_run(code=code, settings=settings or {}, lookback=lookback, **MARKET)


def refusal(verdict: DryRunVerdict) -> str:
    assert not verdict.ok and not verdict.unavailable, verdict
    return verdict.error


def code_error(excinfo: pytest.ExceptionInfo[ValidationError]) -> str:
    errors = excinfo.value.message_dict
    assert set(errors) == {"code"}, errors
    return errors["code"][0]


# --------------------------------------------------------------------------- deploy


@pytest.mark.worker
def test_valid_code_is_deployed_with_version_1(user, dry_runs_on_worker):
    strategy = strategy_deploy(
        owner=user, name="ok", code=VALID, exchange="binance", symbol="ETH/BTC", resolution="5m"
    )
    assert strategy.code_version == 1 and strategy.lookback == 20
    version = StrategyVersion.objects.get(strategy=strategy)
    assert (version.version, version.code, version.lookback) == (1, VALID, 20)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "def generate_signal(c, s):\n    return (\n",
            "syntax error: '(' was never closed (line 2)",
        ),
        ("def other(c, s):\n    pass\n", "generate_signal(candles, settings) is not defined"),
        ("def generate_signal(c):\n    pass\n", "generate_signal must take exactly 2 parameters"),
        ("LOOKBACK = 0\ndef generate_signal(c, s):\n    pass\n", "LOOKBACK must be an int"),
    ],
)
def test_static_errors_are_reported_without_running_anything(user, code, message, settings):
    # given dry runs that no worker takes: a deploy that got that far would be a 503
    settings.STRATEGY_DRY_RUN_QUEUE = "strategy-dry-runs-nobody-takes"
    settings.STRATEGY_DRY_RUN_WAIT_S = 0.1
    with pytest.raises(ValidationError) as excinfo:
        deploy(user, code)
    assert code_error(excinfo).startswith(message)
    assert not Strategy.objects.exists() and not StrategyVersion.objects.exists()


def test_exception_in_the_dry_run_gives_message_line_and_traceback(mode):
    code = (
        "LOOKBACK = 10\n\n"
        "def helper(candles):\n"
        "    return candles['close'].iloc[-1] / 0 + undefined_name\n\n"
        "def generate_signal(candles, settings):\n"
        "    return helper(candles)\n"
    )
    message = refusal(check(code))
    assert message.startswith(
        "dry run failed: exception: NameError: name 'undefined_name' is not defined (line 4)"
    )
    assert 'File "<strategy>", line 7, in generate_signal' in message


def test_module_level_error_is_reported_with_its_line(mode):
    verdict = check("import os\nx = 1 / 0\ndef generate_signal(c, s):\n    return None\n")
    assert refusal(verdict).startswith(
        "dry run failed: exception: ZeroDivisionError: division by zero (line 2)"
    )


SPIN = "def generate_signal(c, s):\n    while True:\n        pass\n"


def test_hanging_strategy_is_rejected_after_the_dry_run_timeout(mode, settings):
    settings.STRATEGY_DRY_RUN_TIMEOUT_S = 1.0
    assert refusal(check(SPIN)) == "dry run failed: timeout after 1.0 s"


@pytest.mark.parametrize(
    ("execution_timeout_s", "max_timeout_s"),
    [(2.0, 60.0), (30.0, 2.0)],
)
def test_the_dry_run_timeout_is_capped_at_half_the_execution_timeout(
    settings, execution_timeout_s, max_timeout_s
):
    # given a dry-run timeout configured above the execution timeout (2 s either way)
    settings.STRATEGY_DRY_RUN_TIMEOUT_S = 30.0
    settings.STRATEGY_TIMEOUT_S = execution_timeout_s
    settings.STRATEGY_MAX_TIMEOUT_S = max_timeout_s
    # then a spinning strategy is stopped at half of it
    assert refusal(check(SPIN)) == "dry run failed: timeout after 1.0 s"


def test_hostile_code_is_rejected(mode):
    code = "import os\ndef generate_signal(c, s):\n    os.kill(os.getppid(), 9)\n"
    assert refusal(check(code)).startswith(
        "dry run failed: exception: PermissionError: [Errno 1] Operation not permitted (line 3)"
    )


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("{'signal': 'LONG', 'price': 1.0, 'stopLoss': 2.0}", "dry run returned an invalid signal"),
        ("{'signal': 'BUY'}", "dry run returned an invalid signal: unknown signal 'BUY'"),
        ("{'signal': 'LONG', 'price': float('nan')}", "dry run failed: invalid result: non-finite"),
        ("42", "dry run failed: invalid result: expected a dict or None, got int"),
    ],
)
def test_invalid_signals_are_rejected(returned, message):
    verdict = check(f"def generate_signal(c, s):\n    return {returned}\n")
    assert refusal(verdict).startswith(message)


CHECKS_CANDLES = """
LOOKBACK = 30

def generate_signal(candles, settings):
    last = float(candles["close"].iloc[-1])
    if len(candles) != 30 or abs(last - settings["expected_close"]) > 1e-9:
        raise ValueError(f"saw {len(candles)} candles, last close {last!r}")
    return None
"""


@pytest.mark.worker
def test_dry_run_uses_the_markets_stored_candles_and_the_settings(user, dry_runs_on_worker):
    # given 40 stored candles for the market
    rows = flat_candles(start_ms=datetime_to_ms(START), count=40)
    load_candles(rows=rows)
    # then the dry run sees the newest 30 of them, with the strategy's settings
    strategy = deploy(user, CHECKS_CANDLES, settings={"expected_close": rows[-1][4]})
    assert strategy.pk


@pytest.mark.worker
def test_dry_run_falls_back_to_synthetic_candles(user, dry_runs_on_worker):
    # given a market without stored candles (another market has some)
    load_candles(symbol="BTC/USDT", rows=flat_candles(start_ms=datetime_to_ms(START), count=40))
    code = """
import math
LOOKBACK = 50

def generate_signal(candles, settings):
    ts = candles["timestamp"]
    steps = ts.diff().dropna().unique()
    closes = candles["close"]
    assert len(candles) == 50, len(candles)
    assert len(steps) == 1 and steps[0].total_seconds() == 300, steps
    assert ts.iloc[-1].minute % 5 == 0 and ts.dt.tz is not None
    assert (closes > 0).all() and all(math.isfinite(x) for x in closes)
    assert (candles["high"] >= candles[["open", "close"]].max(axis=1)).all()
    assert (candles["low"] <= candles[["open", "close"]].min(axis=1)).all()
    return None
"""
    # then the dry run runs on 50 plausible 5-minute candles
    assert deploy(user, code).lookback == 50


@pytest.mark.worker
def test_settings_used_by_the_dry_run_must_be_present(user, dry_runs_on_worker):
    with pytest.raises(ValidationError) as excinfo:
        deploy(user, "def generate_signal(c, s):\n    return {'signal': s['side']}\n")
    assert code_error(excinfo).startswith("dry run failed: exception: KeyError: 'side' (line 2)")
    assert deploy(user, "def generate_signal(c, s):\n    return {'signal': s['side']}\n",
                  settings={"side": "HOLD"}).pk  # fmt: skip


def test_refused_sandbox_is_a_server_error_not_the_authors(settings, monkeypatch):
    settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION = True
    monkeypatch.setattr(isolation, "bwrap_status", lambda: (False, "bwrap is not installed"))
    verdict = check(VALID)
    assert not verdict.ok and verdict.unavailable
    assert verdict.error == (
        "the strategy could not be checked: isolation required but bubblewrap is not usable: "
        "bwrap is not installed"
    )


@pytest.mark.worker
def test_the_dry_run_is_done_by_a_worker_process(dry_runs_on_worker):
    # when a deploy's dry run is asked for
    verdict = strategy_dry_run_on_worker(code=VALID, settings={}, lookback=20, **MARKET)
    # then one of the worker's pool processes ran it, not this (the web) process
    assert verdict.ok, verdict
    assert verdict.checked_by_pid != os.getpid()
    assert _parent(verdict.checked_by_pid) == dry_runs_on_worker.proc.pid


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


# --------------------------------------------------------------------------- code changes


V1 = "def generate_signal(candles, settings):\n    print('v1')\n    return None\n"
V2 = "LOOKBACK = 7\n\ndef generate_signal(candles, settings):\n    print('v2')\n    return None\n"


@pytest.mark.worker
def test_code_change_creates_a_new_immutable_version(user, dry_runs_on_worker):
    strategy = deploy(user, V1)
    updated = strategy_update_code(strategy=strategy, code=V2)
    assert updated.code_version == 2 and updated.code == V2 and updated.lookback == 7
    versions = list(
        StrategyVersion.objects.filter(strategy=strategy)
        .order_by("version")
        .values_list("version", "code", "lookback")
    )
    assert versions == [(1, V1, 100), (2, V2, 7)]


@pytest.mark.worker
def test_resubmitting_the_same_code_changes_nothing(user, dry_runs_on_worker):
    strategy = deploy(user, V1)
    same = strategy_update_code(strategy=strategy, code=V1)
    assert same.code_version == 1
    assert StrategyVersion.objects.filter(strategy=strategy).count() == 1


@pytest.mark.worker
def test_rejected_code_change_keeps_the_current_version(user, dry_runs_on_worker):
    strategy = deploy(user, V1)
    with pytest.raises(ValidationError) as excinfo:
        strategy_update_code(strategy=strategy, code="def generate_signal(c, s):\n    1 / 0\n")
    assert "ZeroDivisionError" in code_error(excinfo) and "(line 2)" in code_error(excinfo)
    strategy.refresh_from_db()
    assert strategy.code == V1 and strategy.code_version == 1
    assert StrategyVersion.objects.filter(strategy=strategy).count() == 1


@pytest.mark.worker
def test_a_change_checked_with_what_changed_meanwhile_is_not_stored(user, dry_runs_on_worker):
    # given a strategy, as two requests read it before either stored anything
    strategy = deploy(user, V1, settings={"fast": 5})
    stale = Strategy.objects.get(pk=strategy.pk)
    # when one stores new settings, and the other's code change, dry-run with the old
    # settings, is then stored
    strategy_update_settings(strategy=strategy, settings={"fast": 6})
    with pytest.raises(StrategyChangedMeanwhile):
        strategy_update_code(strategy=stale, code=V2)
    # then the code is as it was; and the same holds the other way round
    stale = Strategy.objects.get(pk=strategy.pk)
    strategy_update_code(strategy=Strategy.objects.get(pk=strategy.pk), code=V2)
    with pytest.raises(StrategyChangedMeanwhile):
        strategy_change_settings(strategy=stale, settings={"fast": 7})
    strategy.refresh_from_db()
    assert (strategy.code, strategy.code_version) == (V2, 2)
    assert (strategy.settings, strategy.settings_version) == ({"fast": 6}, 2)


@pytest.mark.worker
def test_executions_record_the_version_they_ran(user, mode, dry_runs_on_worker):
    # given a deployed strategy (the default LOOKBACK of 100) with a subscriber and a market
    # long enough for it
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=120))
    strategy = deploy(user, V1)
    subscribe(strategy)

    # when a candle runs, the code changes, and the next candle runs
    first = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 110, trigger="replay"
    )
    strategy_update_code(strategy=strategy, code=V2)
    second = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 111, trigger="replay"
    )

    # then each execution ran, and recorded, the version current when it started
    rows = StrategyExecution.objects.in_bulk([first.execution_id, second.execution_id])
    one, two = rows[first.execution_id], rows[second.execution_id]
    assert (one.code_version, one.logs, one.candles_used) == (1, "v1\n", 100)
    assert (two.code_version, two.logs, two.candles_used) == (2, "v2\n", 7)
    assert StrategyVersion.objects.get(strategy=strategy, version=1).code == V1


@pytest.mark.worker
def test_the_guides_example_strategy_deploys_and_runs(user, mode, dry_runs_on_worker):
    # The strategy authors' guide, linked from the README.
    section = (Path(__file__).resolve().parents[2] / "docs" / "strategies.md").read_text()
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=80))
    strategy = deploy(user, example, settings={"fast": 5, "slow": 20})
    subscribe(strategy)
    outcome = execution_run(
        strategy_id=strategy.pk, interval_start=START + STEP * 70, trigger="replay"
    )
    row = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert strategy.lookback == 60 and row.candles_used == 60
    assert row.status in ("success", "no_signal"), row.error
    assert row.logs.startswith("fast=")
