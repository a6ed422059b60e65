"""Run the candle streamer (see execution/streaming/streamer.py) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from django.core.management.base import BaseCommand

from execution.streaming.streamer import Streamer


class Command(BaseCommand):
    help = "Watch every registered market's candles over WebSocket and run each close at once."

    def handle(self, *args: object, **options: object) -> None:
        logging.getLogger("execution").setLevel(logging.INFO)
        asyncio.run(self._run())

    async def _run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write("candle streamer running (Ctrl-C stops it)")
        self.stdout.flush()
        await Streamer().run(stop=stop)
