"""Time one signal's fan-out to N subscribers, paper or live (see tooling.bench_fanout)."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.bench_fanout import (
    bench_figures,
    bench_floor,
    bench_restart,
    bench_signal,
    bench_start,
    bench_stop,
    bench_warmups,
)
from tooling.live_processes import free_port


class Command(BaseCommand):
    help = (
        "Create N subscribers, fire signals through the real fan-out (worker processes, "
        "database, Redis; live: ccxt against the exchange simulator) and print the timings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--subscribers", type=int, required=True)
        parser.add_argument("--mode", choices=("paper", "live"), required=True)
        parser.add_argument("--exchange-latency-ms", type=float, default=0.0)
        parser.add_argument(
            "--concurrency", type=int, default=2, help="worker processes (prefork pool size)"
        )
        parser.add_argument(
            "--port", type=int, default=0, help="the simulator's port (default: a free one)"
        )
        parser.add_argument(
            "--keep", action="store_true", help="keep the bench's rows in the database"
        )
        parser.add_argument(
            "--restart-settle-s",
            type=float,
            default=10.0,
            help="then restart the worker as a deploy does (pools and sandboxes warmed at start) "
            "and send the next signal this many seconds after it listens; negative: no restart",
        )

    def handle(self, *args: object, **o: Any) -> None:
        if o["subscribers"] < 1 or o["concurrency"] < 1 or o["exchange_latency_ms"] < 0:
            raise CommandError("--subscribers and --concurrency must be >= 1, latency >= 0")
        call_command("migrate", verbosity=0, interactive=False)
        n, mode = o["subscribers"], o["mode"]
        self.stdout.write(
            f"bench_fanout: {n} {mode} subscribers, exchange latency "
            f"{o['exchange_latency_ms']:g} ms, {o['concurrency']} worker processes; setting up…"
        )
        run = bench_start(
            mode=mode,
            subscribers=n,
            latency_ms=o["exchange_latency_ms"],
            concurrency=o["concurrency"],
            port=o["port"] or free_port(),
        )
        try:
            # The first signal builds each worker process's pool (instances, session, markets
            # from Redis); the measured one finds it warm, as every later signal would.
            cold = bench_figures(bench_signal(run, kind="LONG", close=run.closes[6]))
            bench_signal(run, kind="EXIT_LONG", close=run.closes[7])
            warm = bench_figures(bench_signal(run, kind="LONG", close=run.closes[8]))
            self.stdout.write(f"first signal (cold pools): {cold.line()}")
            self.stdout.write(f"measured signal (warm):    {warm.line()}")
            self.stdout.write(f"  cold: {cold.batches_line()}")
            self.stdout.write(f"  warm: {warm.batches_line()}")
            if o["restart_settle_s"] >= 0:
                bench_restart(run, settle_s=o["restart_settle_s"])
                after = bench_figures(bench_signal(run, kind="EXIT_LONG", close=run.closes[9]))
                self.stdout.write(
                    f"first signal after a worker restart ({o['restart_settle_s']:g} s after it "
                    f"listens, pools and sandboxes warmed at start): {after.line()}"
                )
                for line in bench_warmups(run):
                    self.stdout.write(f"  restarted worker: {line}")
            if mode == "live":
                floor = bench_floor(run, orders=n)
                self.stdout.write(
                    f"bare-ccxt floor: {n} orders from one process, one async instance, "
                    f"concurrency 50: {floor:.3f} s ({n / floor:.0f} orders/s)"
                )
                self.stdout.write(
                    f"ratio fan-out / floor: {warm.total_s / floor:.2f}x (target <= 1.5x)"
                )
            else:
                self.stdout.write(
                    f"paper: signal → last trade recorded {warm.recorded_s:.3f} s, last batch "
                    f"finished {warm.finished_s:.3f} s (target <= 2 s at 10,000 subscribers)"
                )
        except (TimeoutError, RuntimeError) as exc:
            raise CommandError(f"bench failed: {exc}") from exc
        finally:
            bench_stop(run, keep=o["keep"])
