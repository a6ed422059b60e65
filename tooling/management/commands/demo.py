from __future__ import annotations

import time

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.demo import (
    DemoRun,
    demo_backtest,
    demo_equity_charts,
    demo_replay,
    demo_report,
    demo_setup,
    demo_start_worker,
    demo_teardown,
)
from tooling.processes import WorkerProcess


class Command(BaseCommand):
    help = "Run the platform end to end: a real worker replays candle closes; prints a report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--closes", type=int, default=240, help="candle closes to replay")

    def handle(self, *args: object, **options: object) -> None:
        closes = int(options["closes"])  # type: ignore[call-overload]
        if closes < 1:
            raise CommandError("--closes must be at least 1")
        started = time.monotonic()
        call_command("migrate", verbosity=0, interactive=False)
        run: DemoRun | None = None
        worker: WorkerProcess | None = None
        try:
            # Ready before the deploy: the strategy's dry run is done by this worker.
            worker = demo_start_worker().wait_ready()
            run = demo_setup(closes=closes)
            run.started = started
            self.stdout.write(f"replaying {len(run.closes)} candle closes of {run.strategy}…")
            demo_replay(run)
            for line in demo_report(run):
                self.stdout.write(line)
            for line in demo_equity_charts(run) + demo_backtest(run):
                self.stdout.write(line)
        except TimeoutError as exc:
            raise CommandError(f"demo failed: {exc}") from exc
        finally:
            demo_teardown(run, worker)
