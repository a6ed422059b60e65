from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.time_utils import parse_utc_moment
from markets.candles import (
    FETCH_PAGE_MAX,
    CandleDataError,
    CandleFetchError,
    FetchPage,
    candles_fetch_history,
)


def _moment(value: str, *, option: str) -> datetime:
    try:
        return parse_utc_moment(value)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from exc


class Command(BaseCommand):
    help = (
        "Download closed OHLCV candles from an exchange (ccxt) into the candle store, page by "
        "page; a re-run resumes after the newest stored candle of the range."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--exchange", required=True, help="a ccxt exchange id, e.g. binance")
        parser.add_argument("--symbol", required=True, help="e.g. ETH/BTC")
        parser.add_argument("--resolution", required=True, help="e.g. 5m, 1h, 1d")
        parser.add_argument("--since", required=True, help="UTC ISO 8601, e.g. 2024-01-01T00:00Z")
        parser.add_argument("--until", help="UTC ISO 8601 (default: now)")
        parser.add_argument(
            "--page-size",
            type=int,
            default=FETCH_PAGE_MAX,
            help=f"candles per request (1..{FETCH_PAGE_MAX})",
        )

    def handle(self, *args: object, **options: object) -> None:
        until = options["until"]
        try:
            summary = candles_fetch_history(
                exchange=str(options["exchange"]),
                symbol=str(options["symbol"]),
                resolution=str(options["resolution"]),
                since=_moment(str(options["since"]), option="--since"),
                until=None if until is None else _moment(str(until), option="--until"),
                page_size=int(str(options["page_size"])),
                on_page=self._progress,
            )
        except (CandleDataError, CandleFetchError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for gap in summary.gaps:
            self.stdout.write(gap.line())
        self.stdout.write(summary.line())

    def _progress(self, page: FetchPage) -> None:
        self.stderr.write(page.line())
