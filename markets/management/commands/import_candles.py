from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from markets.candles import CandleDataError, candles_import_file


class Command(BaseCommand):
    help = "Load ccxt-format OHLCV JSON ([open_ms, o, h, l, c, v] rows) into the candle store."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--exchange", required=True)
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--resolution", required=True)

    def handle(self, *args: object, **options: object) -> None:
        path = options["file"]
        assert isinstance(path, Path)
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        try:
            added = candles_import_file(
                path=path,
                exchange=str(options["exchange"]),
                symbol=str(options["symbol"]),
                resolution=str(options["resolution"]),
            )
        except (CandleDataError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"imported {added} new candles from {path}")
