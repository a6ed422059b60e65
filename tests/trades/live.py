"""Helpers for live-trading tests: the exchange simulator process, its admin API, subscribers.

Everything goes through real ccxt over HTTP to a real simulator process; only the exchange is
stood in for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from django.conf import settings

from execution.processes import WorkerProcess, worker_env
from execution.time_utils import datetime_to_ms
from strategies.models import Strategy
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import credential_create, subscription_create
from tests.factories import UserFactory
from tests.workers import test_database_url

LIVE_QUEUE = "trades-live-tests"
# Short timeouts: a test of a lost answer should not wait the production 10 s.
LIVE_ENV = {
    "EXCHANGE_TIMEOUT_MS": "1500",
    "EXCHANGE_RETRY_BACKOFF_S": "0.05",
    "EXCHANGE_ORDER_RETRIES": "3",
    "ORDER_SEND_LEASE_S": "8",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimulatorProcess:
    """``manage.py exchange_simulator`` on the test database, in its own process group."""

    def __init__(self, *, port: int, log_dir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"simulator-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SimulatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = worker_env(
            DJANGO_SETTINGS_MODULE="config.settings.test", DATABASE_URL=test_database_url()
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "exchange_simulator",
                    f"--port={self.port}",
                    "--hold-s=4",
                ],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited; see {self.log_path}")
            try:
                if requests.get(f"{self.url}/api/v3/ping", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"simulator did not answer; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class Sim:
    """The simulator's admin API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(f"{self.url}{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.post("/sim/reset")

    def refresh(self) -> None:
        self.post("/sim/refresh")

    def clock(self, when: datetime | None) -> None:
        self.post("/sim/clock", {"now_ms": datetime_to_ms(when) if when else None})

    def faults(self, **body: Any) -> Any:
        return self.post("/sim/faults", body)

    def account(self, api_key: str, secret: str, balances: dict[str, str], **extra: Any) -> None:
        self.post(
            "/sim/accounts", {"api_key": api_key, "secret": secret, "balances": balances, **extra}
        )

    def accounts(self, rows: list[dict[str, Any]]) -> None:
        self.post("/sim/accounts", rows)

    def orders(self) -> list[dict[str, Any]]:
        return self.http.get(f"{self.url}/sim/orders", timeout=10).json()

    def stats(self) -> dict[str, int]:
        return self.http.get(f"{self.url}/sim/stats", timeout=10).json()


@dataclass
class Trader:
    subscription: StrategySubscription
    api_key: str
    secret: str


def live_trader(
    sim: Sim,
    strategy: Strategy,
    *,
    balances: dict[str, str] | None = None,
    capital: str = "1",
    risk: str = "0.01",
    leverage: str = "1",
    register: bool = True,
    **subscription_fields: Any,
) -> Trader:
    """A user with an exchange account on the simulator and a live subscription."""
    user = UserFactory()
    api_key, secret = f"key-{uuid.uuid4().hex[:20]}", uuid.uuid4().hex
    if register:
        sim.account(api_key, secret, balances or {"BTC": "10"})
    credential = credential_create(
        user=user, exchange=strategy.exchange, label="main", api_key=api_key, secret=secret
    )
    subscription = subscription_create(
        user=user,
        strategy=strategy,
        capital=Decimal(capital),
        risk_per_trade=Decimal(risk),
        leverage=Decimal(leverage),
        mode=StrategySubscription.Mode.LIVE,
        credential=credential,
    )
    if subscription_fields:
        StrategySubscription.objects.filter(pk=subscription.pk).update(**subscription_fields)
        subscription.refresh_from_db()
    return Trader(subscription, api_key, secret)


def credential_of(trader: Trader) -> BrokerCredential:
    credential = trader.subscription.credential
    assert credential is not None
    return credential


class QueueWorker(WorkerProcess):
    """A worker node that consumes only ``queue`` (the live tests' fan-out queue), so a shared
    worker pool started by other tests, without this simulator's URL, never takes its tasks."""

    def __init__(self, *, queue: str, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env=env, log_dir=log_dir, concurrency=2)
        self.queue = queue

    def start(self) -> QueueWorker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config.celery_app",
                    "worker",
                    "--loglevel=INFO",
                    f"--concurrency={self.concurrency}",
                    "--pool=prefork",
                    "--without-gossip",
                    "--without-mingle",
                    "-Q",
                    self.queue,
                    "-n",
                    self.node,
                ],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self


def live_worker(sim_url: str) -> QueueWorker:
    env = worker_env(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=test_database_url(),
        EXCHANGE_URL_OVERRIDES=f"binance={sim_url}",
        **LIVE_ENV,
    )
    return QueueWorker(queue=LIVE_QUEUE, env=env, log_dir=settings.VAR_DIR / "test-workers")
