from __future__ import annotations

import json
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from execution.services import execution_run, interval_start_for_close
from strategies.models import Strategy, StrategyExecution
from strategies.selectors import execution_as_dict


def _close_time(raw: str | None) -> datetime:
    if raw is None:
        return timezone.now()
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(f"--close-time {raw!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise CommandError("--close-time needs a timezone, e.g. 2018-01-10T12:00:00Z")
    return parsed.astimezone(UTC)


class Command(BaseCommand):
    help = (
        "Run one execution of a strategy now, through the same code path as the scheduler, "
        "and print it as JSON. Fan-out is queued to the workers unless --inline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("strategy_id", type=int)
        parser.add_argument("--close-time", help="candle close (ISO 8601, UTC); default: now")
        parser.add_argument("--inline", action="store_true", help="run the fan-out in process")

    def handle(self, *args: object, **options: object) -> None:
        strategy_id = int(options["strategy_id"])  # type: ignore[call-overload]
        strategy = Strategy.objects.filter(pk=strategy_id).first()
        if strategy is None:
            raise CommandError(f"no strategy with id {strategy_id}")
        close = _close_time(options["close_time"])  # type: ignore[arg-type]
        start = interval_start_for_close(close_time=close, resolution=strategy.resolution)
        outcome = execution_run(
            strategy_id=strategy_id,
            interval_start=start,
            trigger="manual",
            inline_fanout=bool(options["inline"]),
        )
        if outcome.execution_id is None:
            raise CommandError(f"not executed: {outcome.outcome}: {outcome.detail}")
        execution = StrategyExecution.objects.get(pk=outcome.execution_id)
        self.stdout.write(json.dumps(execution_as_dict(execution), indent=2, default=str))
