"""manage.py fetch_candles: history downloaded over ccxt from the exchange simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.clock import ReplayClock
from core.time_utils import datetime_to_ms
from markets.models import Candle
from tests.factories import flat_candles

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
MARKET = ["--exchange", "binance", "--symbol", "ETH/BTC", "--resolution", "5m"]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _history(count: int) -> list[list]:
    return flat_candles(start_ms=datetime_to_ms(START), count=count)


def _fetch(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("fetch_candles", *MARKET, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_fetch_candles_pages_through_the_history_into_the_store(exchange_history):
    # given an exchange with 25 closed candles
    published = exchange_history.publish(_history(25))

    # when they are fetched 10 to a page
    out, err = _fetch("--since", _iso(START), "--page-size", "10")

    # then three pages were read, a line each, and the store holds the exchange's candles
    assert err.splitlines() == [
        f"page 1: 10 candles, 10 new, from {_iso(START)} to {_iso(START + 9 * STEP)}",
        f"page 2: 10 candles, 10 new, from {_iso(START + 10 * STEP)} to {_iso(START + 19 * STEP)}",
        f"page 3: 5 candles, 5 new, from {_iso(START + 20 * STEP)} to {_iso(START + 24 * STEP)}",
    ]
    assert out.splitlines()[-1] == (
        f"fetched 25 candles, 25 new, from {_iso(START)} to {_iso(START + 24 * STEP)}; 0 gaps"
    )
    assert exchange_history.store() == published


def test_a_rerun_resumes_after_the_newest_stored_candle(exchange_history):
    # given a download stopped at START + 10 steps, on an exchange with 30 candles
    published = exchange_history.publish(_history(30))
    _fetch("--since", _iso(START), "--until", _iso(START + 10 * STEP), "--page-size", "4")
    assert Candle.objects.count() == 10

    # when it is run again without the end
    out, err = _fetch("--since", _iso(START), "--page-size", "4")

    # then it asked only for the candles after the ones stored, and now has them all
    assert err.splitlines()[0].startswith(
        f"page 1: 4 candles, 4 new, from {_iso(START + 10 * STEP)}"
    )
    assert out.splitlines()[-1] == (
        f"fetched 20 candles, 20 new, from {_iso(START + 10 * STEP)} "
        f"to {_iso(START + 29 * STEP)}; 0 gaps"
    )
    assert exchange_history.store() == published


def test_a_rerun_stores_nothing_twice(exchange_history):
    # given a fully downloaded history
    published = exchange_history.publish(_history(12))
    _fetch("--since", _iso(START), "--page-size", "5")

    # when the same download runs again, with another page size
    out, _ = _fetch("--since", _iso(START), "--page-size", "7")

    # then nothing new was stored and each candle is there once, unchanged
    assert out.splitlines()[-1] == (
        f"fetched 0 candles, 0 new, nothing to fetch from {_iso(START + 12 * STEP)}; 0 gaps"
    )
    assert exchange_history.store() == published


def test_the_candle_still_open_is_never_stored(exchange_history, settings):
    # given an exchange whose history runs into the candle still open, and a market clock
    # standing (a billionth of real speed) 2 minutes into the 21st candle
    published = exchange_history.publish(_history(30))
    now = START + 20 * STEP + timedelta(minutes=2)
    settings.MARKET_CLOCK = ReplayClock(now, 1e-9, time.time()).spec()

    # when the history is fetched up to a later end than now
    out, _ = _fetch("--since", _iso(START), "--until", _iso(START + 40 * STEP))

    # then only the 20 closed candles are stored
    assert out.splitlines()[-1] == (
        f"fetched 20 candles, 20 new, from {_iso(START)} to {_iso(START + 19 * STEP)}; 0 gaps"
    )
    assert exchange_history.store() == published[:20]


def test_gaps_in_the_history_are_reported(exchange_history):
    # given an exchange missing 3 candles from the 11th on, and the 21st
    rows = [row for i, row in enumerate(_history(30)) if i not in (10, 11, 12, 20)]
    published = exchange_history.publish(rows)

    # when the history is fetched
    out, _ = _fetch("--since", _iso(START), "--page-size", "8")

    # then the summary counts both gaps, each reported where it starts
    assert out.splitlines() == [
        f"gap: 3 candles missing from {_iso(START + 10 * STEP)}",
        f"gap: 1 candles missing from {_iso(START + 20 * STEP)}",
        f"fetched 26 candles, 26 new, from {_iso(START)} to {_iso(START + 29 * STEP)}; 2 gaps",
    ]
    assert exchange_history.store() == published


BAD_INPUT = {
    "unknown exchange": (
        ["--exchange", "nosuchexchange", "--since", "2018-01-10T05:00Z"],
        "unknown exchange 'nosuchexchange'",
    ),
    "unknown symbol": (["--symbol", "NOPE/XYZ", "--since", "2018-01-10T05:00Z"], "unknown symbol"),
    "unknown resolution": (
        ["--resolution", "7m", "--since", "2018-01-10T05:00Z"],
        "unknown resolution '7m'",
    ),
    "a resolution the exchange lacks": (
        ["--resolution", "10m", "--since", "2018-01-10T05:00Z"],
        "binance has no 10m candles",
    ),
    "since after until": (
        ["--since", "2018-01-10T06:00Z", "--until", "2018-01-10T05:00Z"],
        "must be before until",
    ),
    "a naive since": (
        ["--since", "2018-01-10T05:00"],
        "--since: '2018-01-10T05:00' has no timezone",
    ),
    "a naive until": (
        ["--since", "2018-01-10T05:00Z", "--until", "2018-01-10T06:00"],
        "--until: '2018-01-10T06:00' has no timezone",
    ),
    "a since that is no time": (["--since", "yesterday"], "not an ISO 8601 time"),
    "a page size of 0": (
        ["--since", "2018-01-10T05:00Z", "--page-size", "0"],
        "page size must be in 1..1000",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_refused_with_the_reason(exchange_history, case):
    # given an exchange with history
    exchange_history.publish(_history(10))
    args, message = BAD_INPUT[case]

    # when the command is given bad input
    with pytest.raises(CommandError) as refused:
        call_command("fetch_candles", *MARKET, *args, stdout=StringIO(), stderr=StringIO())

    # then it is refused with the reason and stores nothing
    assert message in str(refused.value)
    assert not Candle.objects.exists()


COMMAND_LINE = [
    "--exchange",
    "nope",
    "--symbol",
    "ETH/BTC",
    "--resolution",
    "5m",
    "--since",
    "2018-01-10T05:00Z",
]


def test_bad_input_exits_non_zero_from_the_command_line():
    # when the command runs with an unknown exchange
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    done = subprocess.run(
        [sys.executable, "manage.py", "fetch_candles", *COMMAND_LINE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then it exits non-zero with the reason
    assert done.returncode == 1
    assert "unknown exchange 'nope'" in done.stderr
