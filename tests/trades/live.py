"""Helpers for live-trading tests: the exchange simulator process, its admin API, subscribers.

Everything goes through real ccxt over HTTP to a real simulator process; only the exchange is
stood in for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from strategies.models import Strategy
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import credential_create, subscription_create
from tests.factories import UserFactory
from tests.workers import test_database_url
from tooling.live_processes import QueueWorker, simulator_start
from tooling.processes import ManageProcess, worker_env
from tooling.simulator.client import SimulatorClient as Sim

LIVE_QUEUE = "trades-live-tests"
# Short timeouts: a test of a lost answer should not wait the production 10 s.
LIVE_ENV = {
    "EXCHANGE_TIMEOUT_MS": "1500",
    "EXCHANGE_RETRY_BACKOFF_S": "0.05",
    "EXCHANGE_ORDER_RETRIES": "3",
    "ORDER_SEND_LEASE_S": "8",
}


class SimulatorProcess:
    """``manage.py exchange_simulator`` on the test database."""

    def __init__(self, *, port: int, log_dir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"simulator-{port}.log"
        self.process: ManageProcess | None = None

    def start(self) -> SimulatorProcess:
        env = worker_env(
            DJANGO_SETTINGS_MODULE="config.settings.test", DATABASE_URL=test_database_url()
        )
        self.process = simulator_start(
            port=self.port, env=env, log_path=self.log_path, args=("--hold-s=4",)
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


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


def live_worker(sim_url: str) -> QueueWorker:
    env = worker_env(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=test_database_url(),
        EXCHANGE_URL_OVERRIDES=f"binance={sim_url}",
        **LIVE_ENV,
    )
    return QueueWorker(queue=LIVE_QUEUE, env=env, log_dir=settings.VAR_DIR / "test-workers")
