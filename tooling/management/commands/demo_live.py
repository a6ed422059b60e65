"""The live-mode demo (``make demo-live``): live subscribers through ccxt and the simulator."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.demo_live import (
    LiveDemo,
    live_demo_reconcile,
    live_demo_replay,
    live_demo_report,
    live_demo_start,
    live_demo_stop,
)


class Command(BaseCommand):
    help = (
        "Replay candle closes for live subscribers trading through the unmodified ccxt client "
        "against the local exchange simulator (with injected faults); print a report."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--closes", type=int, default=200, help="candle closes to replay")

    def handle(self, *args: object, **o: Any) -> None:
        if o["closes"] < 1:
            raise CommandError("--closes must be at least 1")
        call_command("migrate", verbosity=0, interactive=False)
        demo: LiveDemo | None = None
        try:
            demo = live_demo_start(closes=o["closes"])
            assert demo.sim is not None
            self.stdout.write(
                f"replaying {len(demo.closes)} candle closes for {len(demo.subscriptions)} live "
                f"subscribers against the simulator at {demo.sim.url}…"
            )
            live_demo_replay(demo)
            live_demo_reconcile(demo)
            for line in live_demo_report(demo):
                self.stdout.write(line)
        except (TimeoutError, RuntimeError) as exc:
            raise CommandError(f"demo-live failed: {exc}") from exc
        finally:
            live_demo_stop(demo)
