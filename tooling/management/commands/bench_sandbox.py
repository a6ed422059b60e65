"""``manage.py bench_sandbox --runs N``: per-execution overhead of the strategy sandbox."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.bench_sandbox import bench


class Command(BaseCommand):
    help = (
        "Run a 200-candle strategy N times in the sandbox and print the per-execution overhead "
        "(wall p50/p95/p99/mean and CPU) with and without bubblewrap, warm zygote vs cold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, default=100, help="runs per warm scenario")
        parser.add_argument(
            "--cold-runs", type=int, default=10, help="runs per cold scenario (each ~0.3-1 s)"
        )
        parser.add_argument("--candles", type=int, default=200, help="candles per execution")

    def handle(self, *args: object, **options: object) -> None:
        runs, cold_runs = int(options["runs"]), int(options["cold_runs"])  # type: ignore[call-overload]
        candles = int(options["candles"])  # type: ignore[call-overload]
        if runs < 1 or cold_runs < 1 or not 1 <= candles <= 5000:
            raise CommandError("--runs and --cold-runs must be >= 1, --candles in 1..5000")
        results = bench(
            runs=runs, cold_runs=cold_runs, candles_count=candles, write=self.stdout.write
        )
        failed = [s.name for s in results if s.failures]
        if failed:
            raise CommandError(f"executions failed in: {', '.join(failed)}")
