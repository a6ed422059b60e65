"""``manage.py bench_executions --strategies N``: N strategies on one close (see
tooling.bench_executions)."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.bench_executions import (
    bench_close,
    bench_sandbox_p50_ms,
    bench_start,
    bench_stop,
    bench_warm_up,
    load_average,
)


class Command(BaseCommand):
    help = (
        "Create N strategies on one market, each with a paper subscriber, dispatch one candle "
        "close to a real worker and print close → last execution finished, executions/s and "
        "the sandbox's share."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strategies", type=int, required=True)
        parser.add_argument(
            "--concurrency", type=int, default=2, help="worker processes (prefork pool size)"
        )
        parser.add_argument(
            "--signal",
            choices=("HOLD", "LONG"),
            default="HOLD",
            help="what the strategies answer (LONG also fans out to each one's subscriber)",
        )
        parser.add_argument(
            "--keep", action="store_true", help="keep the bench's rows in the database"
        )

    def handle(self, *args: object, **o: Any) -> None:
        n, concurrency = o["strategies"], o["concurrency"]
        if not 1 <= n <= 100_000 or concurrency < 1:
            raise CommandError("--strategies must be in 1..100000, --concurrency >= 1")
        call_command("migrate", verbosity=0, interactive=False)
        self.stdout.write(
            f"bench_executions: {n} strategies on one market, signal {o['signal']}, "
            f"{concurrency} worker processes; setting up… ({load_average()})"
        )
        run = bench_start(strategies=n, concurrency=concurrency, signal=o["signal"])
        try:
            bench_warm_up(run)
            self.stdout.write(f"measuring one close… ({load_average()})")
            figures = bench_close(run)
            self.stdout.write(f"{n} strategies, one close: {figures.line()}")
            self.stdout.write(f"after the close: {load_average()}")
            sandbox_ms, isolation = bench_sandbox_p50_ms()
            share = n * sandbox_ms / 1000 / (concurrency * figures.last_finished_s)
            self.stdout.write(
                f"sandbox ({isolation}, warm, same code and candles, in this process): "
                f"p50 {sandbox_ms:.1f} ms per execution; its share of the pool's time over the "
                f"close: {share:.0%} (floor: {n} x {sandbox_ms:.1f} ms / {concurrency} processes "
                f"= {n * sandbox_ms / 1000 / concurrency:.2f} s)"
            )
        except (TimeoutError, RuntimeError) as exc:
            raise CommandError(f"bench failed: {exc}") from exc
        finally:
            bench_stop(run, keep=o["keep"])
