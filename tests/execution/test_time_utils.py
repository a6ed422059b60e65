"""Tests for core.time_utils (pure Python, no Django DB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.time_utils import (
    CANONICAL_RESOLUTIONS,
    candle_close_time,
    compute_lock_ttl,
    compute_next_candle_close,
    datetime_to_ms,
    format_interval_key,
    get_candle_interval_range,
    ms_to_datetime,
    normalize_resolution,
    resolution_to_cron,
    resolution_to_minutes,
    resolution_to_timedelta,
    round_to_interval_boundary,
    validate_execution_timing,
)

US = timedelta(microseconds=1)
CANONICAL = list(CANONICAL_RESOLUTIONS)
MINUTES = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "10m": 10,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "12h": 720,
    "1d": 1440,
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- resolution parsing -------------------------------------------------------------------


def test_canonical_list_is_exactly_the_supported_set() -> None:
    # given / when / then
    assert list(MINUTES) == CANONICAL


@pytest.mark.parametrize("resolution", CANONICAL)
def test_canonical_resolution_round_trips(resolution: str) -> None:
    # given a canonical resolution
    # when normalizing it and converting it
    # then it is unchanged and maps to its minute length
    assert normalize_resolution(resolution) == resolution
    assert resolution_to_minutes(resolution) == MINUTES[resolution]
    assert resolution_to_timedelta(resolution) == timedelta(minutes=MINUTES[resolution])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, "1m"),
        (3, "3m"),
        (5, "5m"),
        (10, "10m"),
        (15, "15m"),
        (30, "30m"),
        (60, "1h"),
        (120, "2h"),
        (240, "4h"),
        (360, "6h"),
        (720, "12h"),
        (1440, "1d"),
        ("1", "1m"),
        ("5", "5m"),
        ("15", "15m"),
        ("60", "1h"),
        ("240", "4h"),
        ("1440", "1d"),
        ("5m", "5m"),
        ("5M", "5m"),
        ("1h", "1h"),
        ("1H", "1h"),
        ("4H", "4h"),
        ("12H", "12h"),
        ("1D", "1d"),
        ("1d", "1d"),
        ("D", "1d"),
        ("d", "1d"),
        ("  5m ", "5m"),
        ("\t60\n", "1h"),
        (" D ", "1d"),
        ("60m", "1h"),
    ],
)
def test_normalize_resolution_accepts_aliases(raw: str | int, expected: str) -> None:
    # given an accepted alias
    # when normalizing
    result = normalize_resolution(raw)
    # then the canonical form is returned
    assert result == expected


@pytest.mark.parametrize(
    "bad",
    ["7m", "0", 0, "-5", -5, "abc", "", "   ", "m", "5x", "1w", "5.0", "2h30m", 7, 2.5, None, True],
)
def test_unknown_resolution_raises_with_allowed_list(bad: object) -> None:
    # given an unsupported resolution
    # when / then every entry point rejects it with a message listing the allowed ones
    with pytest.raises(ValueError, match="unknown resolution") as excinfo:
        normalize_resolution(bad)  # type: ignore[arg-type]
    assert "expected one of 1m,3m,5m,10m,15m,30m,1h,2h,4h,6h,12h,1d" in str(excinfo.value)
    with pytest.raises(ValueError, match="unknown resolution"):
        round_to_interval_boundary(utc(2024, 1, 1), bad)  # type: ignore[arg-type]


# --- cron ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "minute", "hour"),
    [
        ("1m", "*", "*"),
        ("3m", "*/3", "*"),
        ("5m", "*/5", "*"),
        ("10m", "*/10", "*"),
        ("15m", "*/15", "*"),
        ("30m", "*/30", "*"),
        ("1h", "0", "*"),
        ("2h", "0", "*/2"),
        ("4h", "0", "*/4"),
        ("6h", "0", "*/6"),
        ("12h", "0", "*/12"),
        ("1d", "0", "0"),
    ],
)
def test_resolution_to_cron(resolution: str, minute: str, hour: str) -> None:
    # given a resolution / when converting to crontab fields
    cron = resolution_to_cron(resolution)
    # then it fires on each candle close, every day
    assert cron == {
        "minute": minute,
        "hour": hour,
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
    }


@pytest.mark.parametrize("resolution", CANONICAL)
def test_cron_steps_match_epoch_alignment(resolution: str) -> None:
    # given a canonical resolution
    minutes = MINUTES[resolution]
    # then it divides an hour (sub-hour) or a day (hours), so */N never drifts from the
    # epoch grid across hour/day boundaries
    if minutes < 60:
        assert 60 % minutes == 0
    else:
        assert minutes % 60 == 0 and 1440 % minutes == 0
    # and every minute of a day that cron would fire on is exactly a candle boundary
    cron = resolution_to_cron(resolution)
    day = utc(2024, 3, 7)
    for offset in range(1440):
        t = day + timedelta(minutes=offset)
        fires = _cron_field_matches(cron["minute"], t.minute) and _cron_field_matches(
            cron["hour"], t.hour
        )
        assert fires == (round_to_interval_boundary(t, resolution) == t)


def _cron_field_matches(field: str, value: int) -> bool:
    if field == "*":
        return True
    if field.startswith("*/"):
        return value % int(field[2:]) == 0
    return value == int(field)


# --- flooring / next close -------------------------------------------------------------------


@pytest.mark.parametrize("resolution", CANONICAL)
def test_round_on_boundary_and_one_microsecond_before(resolution: str) -> None:
    # given an exact boundary (2024-01-01 00:00 is a boundary for every resolution)
    step = timedelta(minutes=MINUTES[resolution])
    boundary = utc(2024, 1, 1) + 7 * step
    # when flooring the boundary itself and one microsecond before it
    # then the boundary is kept and the earlier instant floors to the previous one
    assert round_to_interval_boundary(boundary, resolution) == boundary
    assert round_to_interval_boundary(boundary - US, resolution) == boundary - step
    assert round_to_interval_boundary(boundary + step - US, resolution) == boundary


@pytest.mark.parametrize(
    ("dt", "resolution", "expected"),
    [
        (utc(2024, 5, 17, 13, 47, 31), "1m", utc(2024, 5, 17, 13, 47)),
        (utc(2024, 5, 17, 13, 47, 31), "3m", utc(2024, 5, 17, 13, 45)),
        (utc(2024, 5, 17, 13, 47, 31), "5m", utc(2024, 5, 17, 13, 45)),
        (utc(2024, 5, 17, 13, 47, 31), "10m", utc(2024, 5, 17, 13, 40)),
        (utc(2024, 5, 17, 13, 47, 31), "15m", utc(2024, 5, 17, 13, 45)),
        (utc(2024, 5, 17, 13, 47, 31), "30m", utc(2024, 5, 17, 13, 30)),
        (utc(2024, 5, 17, 13, 47, 31), "1h", utc(2024, 5, 17, 13)),
        (utc(2024, 5, 17, 13, 47, 31), "2h", utc(2024, 5, 17, 12)),
        (utc(2024, 5, 17, 13, 47, 31), "4h", utc(2024, 5, 17, 12)),
        (utc(2024, 5, 17, 13, 47, 31), "6h", utc(2024, 5, 17, 12)),
        (utc(2024, 5, 17, 13, 47, 31), "12h", utc(2024, 5, 17, 12)),
        (utc(2024, 5, 17, 13, 47, 31), "1d", utc(2024, 5, 17)),
        (utc(2024, 5, 17, 3, 59, 59, 999999), "4h", utc(2024, 5, 17, 0)),
        (utc(2024, 5, 17, 23, 59, 59, 999999), "1d", utc(2024, 5, 17)),
    ],
)
def test_round_to_interval_boundary(dt: datetime, resolution: str, expected: datetime) -> None:
    # given an instant inside a candle / when flooring / then the candle open is returned
    result = round_to_interval_boundary(dt, resolution)
    assert result == expected
    assert result.tzinfo == UTC


def test_daily_candle_starts_at_midnight_utc() -> None:
    # given midnight UTC and the instant just before it
    midnight = utc(2024, 6, 1)
    # then midnight opens a new daily candle and the previous microsecond belongs to the day before
    assert round_to_interval_boundary(midnight, "1d") == midnight
    assert round_to_interval_boundary(midnight - US, "1d") == utc(2024, 5, 31)
    assert compute_next_candle_close(midnight - US, "1d") == midnight


def test_non_utc_aware_datetime_is_converted_to_utc() -> None:
    # given 03:30 on June 1 in UTC+5, i.e. 22:30 UTC on May 31
    plus5 = timezone(timedelta(hours=5))
    local = datetime(2024, 6, 1, 3, 30, tzinfo=plus5)
    # when flooring to a daily / 4h candle and computing the next close
    # then everything is in UTC terms and returned with UTC tzinfo
    day_open = round_to_interval_boundary(local, "1d")
    assert day_open == utc(2024, 5, 31)
    assert day_open.tzinfo == UTC
    assert round_to_interval_boundary(local, "4h") == utc(2024, 5, 31, 20)
    assert compute_next_candle_close(local, "1d") == utc(2024, 6, 1)
    assert format_interval_key(datetime(2024, 6, 1, 5, tzinfo=plus5), "1d") == "1d:20240601T0000Z"


@pytest.mark.parametrize("resolution", CANONICAL)
def test_next_close_is_strictly_after_now(resolution: str) -> None:
    # given a boundary
    step = timedelta(minutes=MINUTES[resolution])
    boundary = utc(2024, 1, 1) + 3 * step
    # when "now" is exactly on it / a microsecond before / a microsecond after
    # then the next close is strictly later
    assert compute_next_candle_close(boundary, resolution) == boundary + step
    assert compute_next_candle_close(boundary - US, resolution) == boundary
    assert compute_next_candle_close(boundary + US, resolution) == boundary + step


@pytest.mark.parametrize(
    ("now", "resolution", "expected"),
    [
        (utc(2023, 12, 31, 23, 59, 30), "1m", utc(2024, 1, 1)),
        (utc(2023, 12, 31, 23, 58), "5m", utc(2024, 1, 1)),
        (utc(2023, 12, 31, 22, 1), "4h", utc(2024, 1, 1)),
        (utc(2023, 12, 31, 12), "12h", utc(2024, 1, 1)),
        (utc(2023, 12, 31, 0, 0, 0, 1), "1d", utc(2024, 1, 1)),
        (utc(2024, 1, 31, 23, 45), "1h", utc(2024, 2, 1)),
        (utc(2023, 2, 28, 23, 59), "1d", utc(2023, 3, 1)),
        (utc(2024, 2, 28, 23, 59), "1d", utc(2024, 2, 29)),
        (utc(2024, 2, 29, 23, 59), "1d", utc(2024, 3, 1)),
        (utc(2024, 2, 29, 21, 0), "6h", utc(2024, 3, 1)),
        (utc(2024, 4, 30, 23, 50), "15m", utc(2024, 5, 1)),
    ],
)
def test_next_close_across_month_year_and_leap_day(
    now: datetime, resolution: str, expected: datetime
) -> None:
    # given an instant just before a month/year/leap-day rollover
    # when / then the next close lands on the rollover
    assert compute_next_candle_close(now, resolution) == expected


# --- interval range -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("close_time", "resolution", "expected"),
    [
        (utc(2024, 5, 17, 12, 5), "5m", (utc(2024, 5, 17, 12), utc(2024, 5, 17, 12, 5))),
        (
            utc(2024, 5, 17, 12, 4, 59, 999999),
            "5m",
            (utc(2024, 5, 17, 11, 55), utc(2024, 5, 17, 12)),
        ),
        (utc(2024, 5, 17, 12, 0, 3), "1h", (utc(2024, 5, 17, 11), utc(2024, 5, 17, 12))),
        (utc(2024, 1, 1), "1d", (utc(2023, 12, 31), utc(2024, 1, 1))),
        (utc(2024, 3, 1, 0, 0, 2), "1d", (utc(2024, 2, 29), utc(2024, 3, 1))),
        (utc(2024, 3, 1, 2), "4h", (utc(2024, 2, 29, 20), utc(2024, 3, 1))),
    ],
)
def test_get_candle_interval_range(
    close_time: datetime, resolution: str, expected: tuple[datetime, datetime]
) -> None:
    # given a (possibly late) close time / when asking for the closed candle
    result = get_candle_interval_range(close_time, resolution)
    # then (open, close) of the last candle closed at or before it is returned
    assert result == expected


@pytest.mark.parametrize("resolution", CANONICAL)
def test_interval_range_and_close_time_are_consistent(resolution: str) -> None:
    # given a boundary for each resolution
    step = timedelta(minutes=MINUTES[resolution])
    close = utc(2024, 2, 29) + 5 * step
    # when computing the range and the close time of its open
    open_, close_ = get_candle_interval_range(close, resolution)
    # then they agree
    assert (open_, close_) == (close - step, close)
    assert candle_close_time(open_, resolution) == close_


# --- interval key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "resolution", "expected"),
    [
        (utc(2018, 1, 10, 4, 55), "5m", "5m:20180110T0455Z"),
        (utc(2018, 1, 10, 4, 55), "5", "5m:20180110T0455Z"),
        (utc(2018, 1, 10, 4), "60", "1h:20180110T0400Z"),
        (utc(2018, 1, 10, 4), "4H", "4h:20180110T0400Z"),
        (utc(2024, 2, 29), "D", "1d:20240229T0000Z"),
        (utc(2024, 12, 31, 23, 57), "3m", "3m:20241231T2357Z"),
    ],
)
def test_format_interval_key(start: datetime, resolution: str | int, expected: str) -> None:
    # given a candle open time / when formatting / then the canonical key is produced
    assert format_interval_key(start, resolution) == expected


def test_interval_keys_sort_chronologically() -> None:
    # given consecutive candle opens across a year rollover
    opens = [utc(2023, 12, 31, 23, 0) + timedelta(minutes=15 * i) for i in range(10)]
    # when formatting keys
    keys = [format_interval_key(o, "15m") for o in opens]
    # then string order equals time order and keys are unique
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("start", "resolution"),
    [
        (utc(2018, 1, 10, 4, 56), "5m"),
        (utc(2018, 1, 10, 4, 55, 0, 1), "5m"),
        (utc(2018, 1, 10, 4, 55, 1), "1m"),
        (utc(2018, 1, 10, 2), "4h"),
        (utc(2018, 1, 10, 12), "1d"),
    ],
)
def test_format_interval_key_rejects_non_boundary(start: datetime, resolution: str) -> None:
    # given an instant that is not a candle open / when / then ValueError
    with pytest.raises(ValueError, match=r"not on a .* candle boundary"):
        format_interval_key(start, resolution)


# --- naive datetimes ------------------------------------------------------------------------

NAIVE = datetime(2024, 1, 1, 12, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: round_to_interval_boundary(NAIVE, "5m"),
        lambda: compute_next_candle_close(NAIVE, "5m"),
        lambda: get_candle_interval_range(NAIVE, "5m"),
        lambda: format_interval_key(NAIVE, "5m"),
        lambda: candle_close_time(NAIVE, "5m"),
        lambda: datetime_to_ms(NAIVE),
        lambda: validate_execution_timing(NAIVE, utc(2024, 1, 1, 12), "5m"),
        lambda: validate_execution_timing(utc(2024, 1, 1, 12), NAIVE, "5m"),
    ],
)
def test_naive_datetime_raises_value_error(call: object) -> None:
    # given a naive datetime / when / then a clear ValueError is raised
    with pytest.raises(ValueError, match="must be timezone-aware"):
        call()  # type: ignore[operator]


# --- lock ttl -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "kwargs", "expected"),
    [
        ("1m", {}, 60),  # capped at the interval (60s) == minimum
        ("3m", {}, 150),  # 30*4 + 30
        ("5m", {}, 150),
        ("1d", {}, 150),
        ("5m", {"execution_timeout_s": 120}, 300),  # 510 capped at the 5m interval
        ("1h", {"execution_timeout_s": 120}, 510),
        ("1h", {"execution_timeout_s": 2.5}, 60),  # 40 raised to the minimum
        ("1m", {"execution_timeout_s": 600}, 60),
        ("1m", {"minimum_s": 90}, 90),  # minimum wins over the interval cap
        ("1h", {"execution_timeout_s": 0, "minimum_s": 10}, 30),
    ],
)
def test_compute_lock_ttl(resolution: str, kwargs: dict[str, float], expected: int) -> None:
    # given a resolution and timeout / when computing the lock TTL
    ttl = compute_lock_ttl(resolution, **kwargs)  # type: ignore[arg-type]
    # then it matches the documented formula
    assert ttl == expected
    assert isinstance(ttl, int)


@pytest.mark.parametrize("resolution", CANONICAL)
@pytest.mark.parametrize("timeout", [0, 1, 30, 59.9, 300, 10_000])
def test_lock_ttl_bounds(resolution: str, timeout: float) -> None:
    # given any resolution and timeout
    ttl = compute_lock_ttl(resolution, execution_timeout_s=timeout)
    interval_s = MINUTES[resolution] * 60
    # then the TTL is within [minimum, max(minimum, interval)] and covers the timeout if it can
    assert 60 <= ttl <= max(60, interval_s)
    if timeout * 4 + 30 <= interval_s:
        assert ttl >= timeout


# --- execution timing -----------------------------------------------------------------------

CLOSE = utc(2024, 5, 17, 12, 5)


def test_timing_early_is_rejected() -> None:
    # given "now" before the candle closed
    ok, drift, reason = validate_execution_timing(CLOSE, CLOSE - timedelta(seconds=2), "5m")
    # then it is not ok with a negative drift
    assert not ok
    assert drift == -2.0
    assert "candle has not closed" in reason


def test_timing_one_microsecond_early_is_rejected() -> None:
    ok, drift, reason = validate_execution_timing(CLOSE, CLOSE - US, "5m")
    assert not ok
    assert drift < 0
    assert "candle has not closed" in reason


@pytest.mark.parametrize("late_s", [0, 0.5, 3, 299, 300])
def test_timing_on_time_is_ok(late_s: float) -> None:
    # given "now" at or shortly after close, up to exactly one interval
    ok, drift, reason = validate_execution_timing(CLOSE, CLOSE + timedelta(seconds=late_s), "5m")
    # then it is ok and the drift is reported
    assert ok
    assert drift == pytest.approx(late_s)
    assert reason == "ok"


def test_timing_stale_by_default_after_one_interval() -> None:
    # given "now" past the next candle close
    ok, drift, reason = validate_execution_timing(CLOSE, CLOSE + timedelta(seconds=300) + US, "5m")
    # then it is stale
    assert not ok
    assert drift == pytest.approx(300.000001)
    assert "stale" in reason


@pytest.mark.parametrize(
    ("late_s", "max_drift_s", "expected_ok"),
    [(10, 10, True), (10.5, 10, False), (0, 0, True), (100, 3600, True)],
)
def test_timing_custom_max_drift(late_s: float, max_drift_s: float, expected_ok: bool) -> None:
    # given an explicit max drift / when validating / then it replaces the interval default
    ok, _, reason = validate_execution_timing(
        CLOSE, CLOSE + timedelta(seconds=late_s), "5m", max_drift_s=max_drift_s
    )
    assert ok is expected_ok
    assert ("stale" in reason) is not expected_ok


def test_timing_accepts_non_utc_now() -> None:
    # given now expressed in UTC+5, 3 seconds after close
    now = (CLOSE + timedelta(seconds=3)).astimezone(timezone(timedelta(hours=5)))
    ok, drift, _ = validate_execution_timing(CLOSE, now, "5m")
    assert ok
    assert drift == 3.0


# --- ms conversion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "dt"),
    [
        (0, utc(1970, 1, 1)),
        (1515560100000, utc(2018, 1, 10, 4, 55)),
        (1709164800000, utc(2024, 2, 29)),
        (1704067199999, utc(2023, 12, 31, 23, 59, 59, 999000)),
    ],
)
def test_ms_round_trip(ms: int, dt: datetime) -> None:
    # given a ccxt open-time in ms / when converting both ways / then they agree in UTC
    converted = ms_to_datetime(ms)
    assert converted == dt
    assert converted.tzinfo == UTC
    assert datetime_to_ms(dt) == ms


def test_datetime_to_ms_floors_sub_millisecond_and_converts_zone() -> None:
    plus5 = timezone(timedelta(hours=5))
    assert datetime_to_ms(utc(1970, 1, 1, 0, 0, 0, 1999)) == 1
    assert datetime_to_ms(datetime(1970, 1, 1, 5, tzinfo=plus5)) == 0
