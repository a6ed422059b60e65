"""Beat's side of the candle-close pipeline: which closes a beat run is due to dispatch."""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings

from core.redis_client import get_redis
from core.time_utils import datetime_to_ms, ms_to_datetime, resolution_to_timedelta

logger = logging.getLogger(__name__)


def beat_cursor_key(resolution: str) -> str:
    return f"beat:last_close:{resolution}"


def beat_closes_due(*, resolution: str, close_time: datetime) -> list[datetime]:
    """Every close beat has not dispatched yet, oldest first, through ``close_time``.

    A beat message says "a candle closed", not which one: the task works that out from the clock
    when it runs. A message that waited in the queue past the next boundary (a busy or restarted
    worker), or a tick beat itself missed, would otherwise skip a close, and a skipped close is a
    lost exit. The cursor makes each run cover the closes since the previous one, at most
    ``BEAT_CATCHUP_MAX_CLOSES`` of them; older ones are logged, not run.
    """
    # GET and SET in one step: of two runs for one close only the first finds it due. Runs that
    # race across a boundary may dispatch a close twice, which the execution fence makes harmless.
    prev = get_redis().set(beat_cursor_key(resolution), datetime_to_ms(close_time), get=True)
    if prev is None or int(prev) > datetime_to_ms(close_time):
        return [close_time]  # first run, or the clock went back (a replay started over)
    step = resolution_to_timedelta(resolution)
    missed = int((close_time - ms_to_datetime(int(prev))) / step)
    limit = settings.BEAT_CATCHUP_MAX_CLOSES
    if missed > limit:
        logger.warning(
            "beat %s: %d closes were not dispatched in time; catching up the last %d",
            resolution,
            missed,
            limit,
        )
    return [close_time - step * i for i in reversed(range(min(missed, limit)))]
