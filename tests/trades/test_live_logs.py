"""Logs of a full live run against the simulator: structured, with the candle path's ids, and
never a key, a secret, a passphrase or a Fernet key."""

from __future__ import annotations

import json
import logging
import uuid
from decimal import Decimal

import pytest
from django.conf import settings as django_settings

from execution.services import execution_run
from strategies.models import StrategyExecution
from strategies.services import strategy_update_settings
from subscriptions.services import credential_create, subscription_create
from tests import workers
from tests.factories import StrategyFactory, UserFactory
from tests.trades.conftest import STEP
from tests.trades.live import LIVE_ENV, LIVE_QUEUE, live_trader
from tests.workers import wait_for
from tooling.processes import WorkerProcess, worker_env
from trades.models import Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _json_worker(sim_url: str) -> WorkerProcess:
    """A worker on the live queue logging everything at DEBUG, as production would: JSON."""
    env = worker_env(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=workers.test_database_url(),
        EXCHANGE_URL_OVERRIDES=f"binance={sim_url}",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        **LIVE_ENV,
    )
    log_dir = django_settings.VAR_DIR / "test-workers"
    return WorkerProcess(env=env, log_dir=log_dir, queues=[LIVE_QUEUE], loglevel="DEBUG")


def _fanned_out(execution_id: int) -> bool:
    row = StrategyExecution.objects.get(pk=execution_id)
    return row.fanout_dispatched_at is not None and row.fanout_done >= row.fanout_total


def _run_close(strategy, close) -> int:
    outcome = execution_run(strategy_id=strategy.pk, interval_start=close - STEP, trigger="replay")
    assert outcome.execution_id is not None
    wait_for(lambda: _fanned_out(outcome.execution_id), timeout=90, what="fan-out")
    return outcome.execution_id


def test_a_live_run_logs_no_secret_and_every_fanout_line_names_its_work(sim, market, caplog):
    # given live subscribers: two with accounts, one whose keys the exchange does not know,
    # one with a passphrase; an exchange failing and throttling some requests; and a worker
    # logging at DEBUG in JSON
    caplog.set_level(logging.DEBUG)
    strategy = StrategyFactory(settings={"signal": "LONG"})
    traders = [live_trader(sim, strategy) for _ in range(2)]
    traders.append(live_trader(sim, strategy, register=False))
    user, key = UserFactory(), f"key-{uuid.uuid4().hex}"
    secret, passphrase = f"secret-{uuid.uuid4().hex}", f"pass-{uuid.uuid4().hex}"
    sim.account(key, secret, {"BTC": "10"})
    credential = credential_create(
        user=user, exchange="binance", label="pp", api_key=key, secret=secret, passphrase=passphrase
    )
    subscription_create(
        user=user,
        strategy=strategy,
        capital=Decimal(1),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=credential,
    )
    sim.faults(fail_rate=0.2, rate_limit_rate=0.2)
    worker = _json_worker(sim.url).start().wait_ready()
    try:
        # when a candle closes with an entry, and a later one with the exit
        sim.clock(market[10])
        entry = _run_close(strategy, market[10])
        strategy_update_settings(strategy=strategy, settings={"signal": "EXIT_LONG"})
        sim.clock(market[12])
        _run_close(strategy, market[12])
    finally:
        worker.stop()
    worker_log = worker.log_text()

    # then orders went out (the run was a real one), and no line of this process or of the
    # worker holds a key, a secret, a passphrase or a Fernet key
    assert Order.objects.filter(execution_id=entry, status="filled").exists()
    secrets = [t.api_key for t in traders] + [t.secret for t in traders]
    secrets += [key, secret, passphrase, *django_settings.CREDENTIALS_ENCRYPTION_KEYS]
    here = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert here and worker_log
    for value in secrets:
        assert value not in here
        assert value not in worker_log

    # and the worker's lines are JSON, the fan-out's naming its task, execution and strategy
    lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    fanout = [line for line in lines if line.get("execution_id") == entry]
    assert fanout, "no worker line named the entry's execution"
    assert all(line["strategy_id"] == strategy.pk and line["task_id"] for line in fanout)
    assert all(line["task"] == "execution.tasks.fanout_orders" for line in fanout)
    assert any("client_order_id" in line for line in lines)
