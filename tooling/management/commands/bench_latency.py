"""``manage.py bench_latency --closes N [--source stream|beat]``: close → execution latency."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tooling.bench_latency import bench_latency_run


class Command(BaseCommand):
    help = (
        "Replay N candle closes through the exchange simulator and print p50/p99 of close -> "
        "execution start and close -> last order, with the candle streamer and with beat alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--closes", type=int, default=20)
        parser.add_argument(
            "--source",
            choices=("stream", "beat"),
            default=None,
            help="one source only (default: both)",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=150.0,
            help="market seconds per real second (150: a 5m close every 2 s)",
        )
        parser.add_argument("--subscribers", type=int, default=10)

    def handle(self, *args: object, **o: object) -> None:
        closes, speed = int(o["closes"]), float(o["speed"])  # type: ignore[call-overload, arg-type]
        if closes < 1 or speed <= 0:
            raise CommandError("--closes must be >= 1 and --speed > 0")
        call_command("migrate", verbosity=0, interactive=False)
        sources = [o["source"]] if o["source"] else ["stream", "beat"]
        for source in sources:
            report = bench_latency_run(
                source=str(source),
                closes=closes,
                speed=speed,
                subscribers=int(o["subscribers"]),  # type: ignore[call-overload]
            )
            for line in report.lines():
                self.stdout.write(line)
