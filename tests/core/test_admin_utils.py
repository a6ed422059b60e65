"""The admin's displays: figures as an operator reads them, not as floats and locales print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from core.admin_utils import (
    first_line,
    milliseconds,
    plain_decimal,
    real_time_drift,
    utc_milliseconds,
    utc_seconds,
)


def test_durations_are_rounded_milliseconds_and_long_ones_seconds():
    assert milliseconds(9.402000000000001) == "9 ms"
    assert milliseconds(0.4) == "0 ms"
    assert milliseconds(1249.6) == "1,250 ms"
    assert milliseconds(12_345.0) == "12.3 s"
    assert milliseconds(None) == "—"


def test_drift_is_shown_for_real_time_runs_only():
    # a replay of a historical candle starts years after its close: no drift to speak of
    assert real_time_drift(279737523955.11597, "manual") == "—"
    assert real_time_drift(279737523955.11597, "replay") == "—"
    for trigger in ("beat", "stream", "backfill"):
        assert real_time_drift(842.3, trigger) == "842 ms"


def test_times_are_utc_to_the_second_in_lists_and_the_millisecond_on_pages():
    # given a time with microseconds, held in another zone
    moment = datetime(2026, 12, 2, 15, 36, 20, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert utc_seconds(moment) == "2026-12-02 13:36:20"
    assert utc_milliseconds(moment) == "2026-12-02 13:36:20.123 UTC"
    assert utc_seconds(None) == utc_milliseconds(None) == "—"
    assert utc_milliseconds(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01 00:00:00.000 UTC"


def test_an_error_shows_its_first_line_on_one_line_escaped_and_cut():
    error = "\n  exception: KeyError: 'close' <x> (line 3)\nTraceback (most recent call last):"
    shown = str(first_line(error))
    assert ">exception: KeyError: &#x27;close&#x27; &lt;x&gt; (line 3)</span>" in shown
    assert "white-space: nowrap" in shown and "Traceback" not in shown
    long = str(first_line("x" * 200, limit=20))
    assert ">" + "x" * 19 + "…</span>" in long and f'title="{"x" * 200}"' in long
    assert first_line("") == first_line(" \n ") == "—"


def test_decimals_lose_their_column_padding():
    assert plain_decimal(Decimal("2.000000000000")) == "2"
    assert plain_decimal(Decimal("10.500")) == "10.5"
    assert plain_decimal(Decimal("0.00012300")) == "0.000123"
    assert plain_decimal(None) == "—"
