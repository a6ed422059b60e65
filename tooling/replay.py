"""A replayed market: the exchange simulator serving stored history on a fast replay clock.

Tests, ``bench_latency`` and the demo use it to see real candle closes within seconds: the
simulator streams klines over WebSocket and serves REST like the exchange, and every platform
process started with ``process_env()`` shares its clock and points the exchange at it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests
from django.conf import settings

from core.clock import ReplayClock
from core.time_utils import datetime_to_ms, resolution_to_timedelta
from markets.candles import candles_import
from tooling.processes import ManageProcess, free_port


@dataclass
class ReplayMarket:
    start: datetime  # market time at which the replay starts
    speed: float  # market seconds per real second
    exchange: str = "binance"
    source: str = "replay-source"  # candle store exchange id the simulator reads from
    port: int = field(default_factory=free_port)
    t0: float = field(default_factory=time.time)
    simulator: ManageProcess | None = None

    @property
    def clock(self) -> ReplayClock:
        return ReplayClock(self.start, self.speed, self.t0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings_overrides(self) -> dict[str, object]:
        return {
            "MARKET_CLOCK": self.clock.spec(),
            "EXCHANGE_URL_OVERRIDES": {self.exchange: self.base_url},
        }

    def process_env(self, base: dict[str, str]) -> dict[str, str]:
        return {
            **base,
            "MARKET_CLOCK": self.clock.spec(),
            "EXCHANGE_URL_OVERRIDES": f"{self.exchange}={self.base_url}",
        }

    def load(self, *, rows: list[list], symbol: str, resolution: str) -> int:
        """All rows for the simulator; only candles closed before ``start`` for the platform."""
        candles_import(exchange=self.source, symbol=symbol, resolution=resolution, rows=rows)
        step_ms = int(resolution_to_timedelta(resolution).total_seconds() * 1000)
        history = [r for r in rows if int(r[0]) + step_ms <= datetime_to_ms(self.start)]
        return candles_import(
            exchange=self.exchange, symbol=symbol, resolution=resolution, rows=history
        )

    def start_simulator(self, *, env: dict[str, str], log_dir: Path) -> ManageProcess:
        from tooling.live_processes import simulator_start

        args = (
            f"--exchange={self.source}",
            f"--speed={self.speed}",
            f"--start={self.start.isoformat()}",
            f"--t0={self.t0}",
        )
        log = log_dir / f"simulator-{self.port}.log"
        self.simulator = simulator_start(port=self.port, env=env, log_path=log, args=args)
        return self.simulator

    def drop_streams(self, *, refuse_s: float) -> None:
        requests.post(f"{self.base_url}/sim/stream/drop", json={"refuse_s": refuse_s}, timeout=5)

    def stream_status(self) -> dict:
        return dict(requests.get(f"{self.base_url}/sim/stream", timeout=5).json())

    def stop(self) -> None:
        if self.simulator is not None:
            self.simulator.stop()


def replay_log_dir() -> Path:
    return Path(settings.VAR_DIR) / "replay"


def replay_rows(*, symbol: str, resolution: str, count: int = 2000) -> list[list]:
    """Real candles from the market data directory when present, else a seeded synthetic market."""
    from markets.market_data import market_file, synthetic_candles

    path = market_file(symbol=symbol, resolution=resolution)
    if path.exists():
        return json.loads(path.read_text())[:count]
    return synthetic_candles(resolution=resolution, count=count, seed=sum(map(ord, symbol)))
