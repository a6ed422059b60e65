"""UTC candle/interval arithmetic for strategy execution.

Pure-stdlib helpers (no Django imports) shared by schedulers, workers and tests.

Conventions:
    * Every datetime is timezone-aware. Naive datetimes raise ``ValueError``;
      aware datetimes in other zones are converted to UTC.
    * Candles align to UTC epoch boundaries: a candle of ``N`` minutes opens at
      every instant whose minutes-since-epoch is a multiple of ``N``. Because all
      canonical resolutions divide one day, 1d candles open at 00:00 UTC, 4h at
      00/04/08..., 1h on the hour.
    * Timestamps in milliseconds follow the ccxt OHLCV convention (candle open
      time, milliseconds since the Unix epoch).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta  # datetime.UTC is timezone.utc

__all__ = [
    "CANONICAL_RESOLUTIONS",
    "candle_close_time",
    "compute_lock_ttl",
    "compute_next_candle_close",
    "datetime_to_ms",
    "format_interval_key",
    "get_candle_interval_range",
    "ms_to_datetime",
    "normalize_resolution",
    "resolution_to_cron",
    "resolution_to_minutes",
    "resolution_to_timedelta",
    "round_to_interval_boundary",
    "validate_execution_timing",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Canonical resolution -> length in minutes (ordered shortest first).
CANONICAL_RESOLUTIONS: dict[str, int] = {
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

_MINUTES_TO_CANONICAL: dict[int, str] = {m: r for r, m in CANONICAL_RESOLUTIONS.items()}
_UNIT_MINUTES: dict[str, int] = {"m": 1, "h": 60, "d": 1440}
_INTERVAL_KEY_FORMAT = "%Y%m%dT%H%MZ"

Resolution = str | int


def _unknown(resolution: object) -> ValueError:
    allowed = ",".join(CANONICAL_RESOLUTIONS)
    return ValueError(f"unknown resolution {resolution!r}: expected one of {allowed}")


def _ensure_utc(dt: datetime, name: str = "datetime") -> datetime:
    """Return ``dt`` converted to UTC; raise ``ValueError`` if it is naive."""
    if not isinstance(dt, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise ValueError(f"{name} must be timezone-aware (UTC expected), got naive {dt!r}")
    return dt.astimezone(UTC)


def normalize_resolution(resolution: Resolution) -> str:
    """Return the canonical resolution string, e.g. ``"60"`` -> ``"1h"``, ``"D"`` -> ``"1d"``.

    Accepts ints / digit strings of minutes and ``<n><m|h|d>`` strings (unit
    case-insensitive, ``"D"`` alone meaning ``"1d"``), surrounding whitespace ignored.
    """
    minutes: int | None = None
    if isinstance(resolution, bool):  # bool is an int subclass; True is not "1 minute"
        raise _unknown(resolution)
    if isinstance(resolution, int):
        minutes = resolution
    elif isinstance(resolution, str):
        text = resolution.strip().lower()
        if text == "d":
            text = "1d"
        if text.isascii() and text.isdigit():
            minutes = int(text)
        elif len(text) >= 2 and text[-1] in _UNIT_MINUTES and text[:-1].isascii():
            number = text[:-1]
            if number.isdigit():
                minutes = int(number) * _UNIT_MINUTES[text[-1]]
    canonical = _MINUTES_TO_CANONICAL.get(minutes) if minutes is not None else None
    if canonical is None:
        raise _unknown(resolution)
    return canonical


def resolution_to_minutes(resolution: Resolution) -> int:
    """Length of one candle in minutes."""
    return CANONICAL_RESOLUTIONS[normalize_resolution(resolution)]


def resolution_to_timedelta(resolution: Resolution) -> timedelta:
    """Length of one candle as a ``timedelta``."""
    return timedelta(minutes=resolution_to_minutes(resolution))


def resolution_to_cron(resolution: Resolution) -> dict[str, str]:
    """django-celery-beat ``CrontabSchedule`` fields firing at every candle close (UTC).

    Sub-hour resolutions divide 60 and hour resolutions divide 24, so ``*/N``
    cron steps coincide exactly with epoch-aligned candle boundaries.
    """
    minutes = resolution_to_minutes(resolution)
    if minutes < 60:
        minute, hour = f"*/{minutes}" if minutes > 1 else "*", "*"
    elif minutes < 1440:
        hours = minutes // 60
        minute, hour = "0", (f"*/{hours}" if hours > 1 else "*")
    else:
        minute, hour = "0", "0"
    return {
        "minute": minute,
        "hour": hour,
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
    }


def round_to_interval_boundary(dt: datetime, resolution: Resolution) -> datetime:
    """Floor ``dt`` to the open time of the candle containing it (UTC)."""
    step = resolution_to_timedelta(resolution)
    elapsed = _ensure_utc(dt, "dt") - EPOCH
    return EPOCH + (elapsed // step) * step


def compute_next_candle_close(now: datetime, resolution: Resolution) -> datetime:
    """Next candle close strictly after ``now`` (on a boundary -> the following one)."""
    return round_to_interval_boundary(now, resolution) + resolution_to_timedelta(resolution)


def get_candle_interval_range(
    close_time: datetime, resolution: Resolution
) -> tuple[datetime, datetime]:
    """``(open, close)`` of the latest candle that closed at or before ``close_time``."""
    close = round_to_interval_boundary(close_time, resolution)
    return close - resolution_to_timedelta(resolution), close


def format_interval_key(interval_start: datetime, resolution: Resolution) -> str:
    """Deterministic, sortable key for a candle, e.g. ``"5m:20180110T0455Z"`` (open time).

    Raises ``ValueError`` if ``interval_start`` is not on a candle boundary.
    """
    canonical = normalize_resolution(resolution)
    start = _ensure_utc(interval_start, "interval_start")
    if round_to_interval_boundary(start, canonical) != start:
        raise ValueError(
            f"interval_start {start.isoformat()} is not on a {canonical} candle boundary"
        )
    return f"{canonical}:{start.strftime(_INTERVAL_KEY_FORMAT)}"


def compute_lock_ttl(
    resolution: Resolution, *, execution_timeout_s: float = 30, minimum_s: int = 60
) -> int:
    """Seconds to hold the per-interval execution lock in Redis."""
    interval_s = resolution_to_minutes(resolution) * 60
    # Why: the lock must outlive a full execution (timeout) plus fan-out/retry and
    # clock-skew margin (x4 + 30s) so a slow run is never picked up twice, yet be capped
    # at one interval so a lock orphaned by a crashed worker is gone by roughly the next
    # candle close (lock names carry the interval key, so consecutive intervals never
    # contend anyway). The floor keeps very short locks from expiring mid-dispatch and
    # wins over the cap if minimum_s exceeds the interval length.
    return max(minimum_s, min(int(execution_timeout_s * 4) + 30, interval_s))


def validate_execution_timing(
    interval_close: datetime,
    now: datetime,
    resolution: Resolution,
    *,
    max_drift_s: float | None = None,
) -> tuple[bool, float, str]:
    """Check whether executing for the candle closing at ``interval_close`` is timely.

    Returns ``(ok, drift_seconds, reason)`` with ``drift = now - interval_close``.
    Not ok if the candle has not closed yet, or if drift exceeds ``max_drift_s``
    (default: one full interval, i.e. the next candle has closed already).
    """
    close = _ensure_utc(interval_close, "interval_close")
    current = _ensure_utc(now, "now")
    limit = (
        resolution_to_timedelta(resolution).total_seconds() if max_drift_s is None else max_drift_s
    )
    drift = (current - close).total_seconds()
    if drift < 0:
        return False, drift, f"candle has not closed yet ({-drift:.3f}s early)"
    if drift > limit:
        return (
            False,
            drift,
            f"stale: {drift:.3f}s after close exceeds max drift {limit:.3f}s",
        )
    return True, drift, "ok"


def candle_close_time(open_time: datetime, resolution: Resolution) -> datetime:
    """Close time of the candle opening at ``open_time`` (``open + resolution``)."""
    return _ensure_utc(open_time, "open_time") + resolution_to_timedelta(resolution)


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since epoch (ccxt OHLCV open time) -> aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(dt: datetime) -> int:
    """Aware datetime -> milliseconds since epoch (floored, exact integer arithmetic)."""
    return (_ensure_utc(dt, "dt") - EPOCH) // timedelta(milliseconds=1)


def parse_utc_moment(value: str) -> datetime:
    """An ISO 8601 time that says its zone (``ValueError`` otherwise), in UTC.

    A naive time would be read in the machine's zone: every time here is UTC, said so.
    """
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no timezone; give it in UTC, e.g. {value}Z")
    return moment.astimezone(UTC)
