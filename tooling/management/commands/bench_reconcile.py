"""Time a reconciliation of N live credentials against the simulator (tooling.bench_reconcile)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.bench_reconcile import bench_run, bench_start, bench_stop
from tooling.live_processes import free_port


class Command(BaseCommand):
    help = (
        "Create N live subscribers with accounts on the exchange simulator, reconcile them all "
        "once (real hub, ccxt and Redis rate limiter) and print the time, the floor the "
        "exchange's rate allows and the peak request rates the simulator saw."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credentials", type=int, default=1000)
        parser.add_argument(
            "--diverge", type=int, default=100, help="accounts holding another quantity"
        )
        parser.add_argument(
            "--exchange-rate",
            type=float,
            default=None,
            help="requests per second for the exchange (default: EXCHANGE_RATE_PER_EXCHANGE)",
        )
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--keep", action="store_true", help="keep the bench's rows")

    def handle(self, *args: object, **o: Any) -> None:
        n, diverge = o["credentials"], o["diverge"]
        if n < 1 or not 0 <= diverge <= n:
            raise CommandError("--credentials must be >= 1 and --diverge between 0 and it")
        if o["exchange_rate"] is not None:
            if o["exchange_rate"] <= 0:
                raise CommandError("--exchange-rate must be above 0")
            settings.EXCHANGE_RATE_PER_EXCHANGE = o["exchange_rate"]
        call_command("migrate", verbosity=0, interactive=False)
        self.stdout.write(
            f"bench_reconcile: {n} live credentials ({diverge} diverging), exchange rate "
            f"{settings.EXCHANGE_RATE_PER_EXCHANGE:g}/s, per credential "
            f"{settings.EXCHANGE_RATE_PER_CREDENTIAL:g}/s, batches of "
            f"{settings.RECONCILE_BATCH_SIZE}; setting up…"
        )
        run = bench_start(credentials=n, diverging=diverge, port=o["port"] or free_port())
        try:
            # The first run builds this process's ccxt instance per credential (as a worker's
            # first reconciliation does); the second finds them pooled, as every later one.
            for name, field in (
                ("first run (cold pool)", "opened"),
                ("second run (warm)", "updated"),
            ):
                figures = bench_run(run)
                self.stdout.write(f"{name}:")
                for line in figures.lines():
                    self.stdout.write(f"  {line}")
                self._check(figures, diverge=diverge, field=field)
        finally:
            bench_stop(run, keep=o["keep"])

    def _check(self, figures: Any, *, diverge: int, field: str) -> None:
        found = getattr(figures.outcome, field)
        if found != diverge or figures.outcome.failed:
            raise CommandError(
                f"expected {diverge} divergences {field} and no failure, found {found} and "
                f"{figures.outcome.failed} failed"
            )
        verdict = "respected" if figures.within_limits else "EXCEEDED"
        self.stdout.write(f"  rate limits: {verdict}")
        if not figures.within_limits:
            raise CommandError("the exchange saw more requests than the limits allow")
