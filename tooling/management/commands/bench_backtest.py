"""``manage.py bench_backtest``: backtest candles/s, per candle and vectorised, and the floor."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.bench_backtest import bench


class Command(BaseCommand):
    help = (
        "Backtest an SMA(10,30) strategy over all 5,760 ETH/BTC 5m candles, per candle in one "
        "sandbox session and vectorised, and print candles/s beside the floor: the same "
        "generate_signal in a plain loop in one process over the same windows."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, default=3, help="runs of each; the best counts")

    def handle(self, *args: object, **options: object) -> None:
        runs = int(str(options["runs"]))
        if runs < 1:
            raise CommandError("--runs must be >= 1")
        try:
            bench(runs=runs, write=self.stdout.write)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
