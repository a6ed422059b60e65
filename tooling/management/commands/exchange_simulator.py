"""Serve the local Binance-spot-like exchange simulator (see trades/simulator)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from core.clock import ReplayClock, replay_clock_parse
from tooling.simulator.server import Extension, Faults, Simulator, run
from tooling.simulator.stream import kline_stream


def _rate(value: str) -> float:
    rate = float(value)
    if not 0 <= rate <= 1:
        raise ValueError("a rate is a fraction between 0 and 1")
    return rate


class Command(BaseCommand):
    help = "Run a local Binance-spot-like exchange that the unmodified ccxt client can talk to."
    requires_system_checks: list[str] = []  # a dev tool: it must start beside a half-done API

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--exchange", default="binance", help="candle store exchange id")
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--fail-rate", type=_rate, default=0.0, help="5xx before acceptance")
        parser.add_argument(
            "--timeout-after-accept-rate",
            type=_rate,
            default=0.0,
            help="orders accepted whose answer is held back past the client's timeout",
        )
        parser.add_argument(
            "--rate-limit-rate", type=_rate, default=0.0, help="429 (every fifth a 418)"
        )
        parser.add_argument(
            "--hold-s",
            type=float,
            default=30.0,
            help="how long an accepted order's answer is held back on a timeout",
        )
        parser.add_argument("--seed", type=int, default=None)
        # Replay clock and WebSocket kline stream (issue 7).
        parser.add_argument(
            "--speed",
            type=float,
            default=None,
            help="replay: simulated seconds per real second (needs --start)",
        )
        parser.add_argument(
            "--start",
            default=None,
            help="replay: market time (ISO 8601, UTC) at which the clock starts",
        )
        parser.add_argument(
            "--t0",
            type=float,
            default=None,
            help="replay: real unix time at which the clock shows --start",
        )
        parser.add_argument(
            "--extension",
            action="append",
            default=[],
            help="dotted path of a callable (simulator, app) adding routes, e.g. a WS stream",
        )

    def handle(self, *args: object, **o: Any) -> None:
        try:
            extensions: list[Extension] = [import_string(path) for path in o["extension"]]
        except ImportError as exc:
            raise CommandError(f"cannot load extension: {exc}") from exc
        simulator = Simulator(
            exchange_id=o["exchange"],
            faults=Faults(
                fail_rate=o["fail_rate"],
                timeout_after_accept_rate=o["timeout_after_accept_rate"],
                rate_limit_rate=o["rate_limit_rate"],
                hold_s=o["hold_s"],
            ),
            latency_ms=o["latency_ms"],
            seed=o["seed"],
        )
        clock = _replay_clock(o)
        extensions.append(kline_stream(clock))
        self.stdout.write(f"exchange simulator on http://{o['host']}:{o['port']}")
        if clock is not None:
            self.stdout.write(f"MARKET_CLOCK={clock.spec()}")
        self.stdout.flush()
        run(host=o["host"], port=o["port"], simulator=simulator, extensions=extensions)


def _replay_clock(o: dict[str, Any]) -> ReplayClock | None:
    if o["speed"] is None:
        return None
    if not o["start"]:
        raise CommandError("--speed needs --start (the market time the replay starts at)")
    spec = f"{o['start']}@{o['speed']}@{o['t0'] if o['t0'] is not None else time.time()}"
    try:
        return replay_clock_parse(spec)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
