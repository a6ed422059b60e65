"""The backtest task: a redelivered message changes nothing, and runs go to their own queue."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from backtests.models import Backtest, BacktestTrade
from backtests.tasks import backtest_execute
from config.celery_app import app
from tests.api.helpers import client_for
from tests.factories import UserFactory, backtest_of, stored_candles
from tests.strategy_code import SMA_CROSSOVER

pytestmark = pytest.mark.django_db
# Nobody consumes it: the message stays on the broker for the test to read.
ROUTING_QUEUE = "backtests-routing-test"
FAILS = """
LOOKBACK = 5

def generate_signal(candles, settings):
    raise RuntimeError("no signal today")
"""


def _state(backtest_id: int) -> tuple[dict, list[dict]]:
    """Everything a run records: the backtest's row and its trades."""
    row = Backtest.objects.filter(pk=backtest_id).values().get()
    trades = list(BacktestTrade.objects.filter(backtest_id=backtest_id).order_by("pk").values())
    return row, trades


def _broker_messages(queue: str) -> list[dict]:
    with app.connection_for_read() as connection:
        raw = connection.default_channel.client.lrange(queue, 0, -1)
    return [json.loads(message) for message in raw]


def _purge(queue: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


@pytest.fixture
def candles():
    return stored_candles(count=300)


def test_a_redelivered_task_finds_the_backtest_done_and_changes_nothing(candles):
    # given a backtest the task has run
    backtest = backtest_of(owner=UserFactory(), code=SMA_CROSSOVER)
    assert backtest_execute(backtest.pk) == "done"
    after_first = _state(backtest.pk)
    assert after_first[0]["status"] == "done" and after_first[0]["metrics"]
    assert after_first[1], "the crossover trades on these candles"

    # when the message is delivered again
    status = backtest_execute(backtest.pk)

    # then it answers the status and writes nothing: same row, same trades
    assert status == "done"
    assert _state(backtest.pk) == after_first


def test_a_redelivered_task_leaves_a_failed_backtest_failed(candles):
    backtest = backtest_of(owner=UserFactory(), code=FAILS)
    assert backtest_execute(backtest.pk) == "failed"
    failed = _state(backtest.pk)
    assert "no signal today" in failed[0]["error"]

    assert backtest_execute(backtest.pk) == "failed"
    assert _state(backtest.pk) == failed


def test_a_task_delivered_while_another_worker_runs_the_backtest_leaves_it_alone(candles):
    # given a backtest another worker claimed a moment ago
    backtest = backtest_of(owner=UserFactory(), code=SMA_CROSSOVER)
    Backtest.objects.filter(pk=backtest.pk).update(
        status="running", started_at=timezone.now() - timedelta(seconds=5), candles_done=40
    )
    before = _state(backtest.pk)

    # when a second delivery of its message arrives
    status = backtest_execute(backtest.pk)

    # then it does not run it a second time beside the first
    assert status == "running"
    assert _state(backtest.pk) == before


def test_a_requested_backtest_is_queued_after_the_commit_on_the_backtest_queue(
    candles, settings, django_capture_on_commit_callbacks
):
    # given the backtest queue, empty
    settings.BACKTEST_QUEUE = ROUTING_QUEUE
    _purge(ROUTING_QUEUE)
    api = client_for(UserFactory())
    body = {"code": SMA_CROSSOVER, "exchange": "binance", "symbol": "ETH/BTC", "resolution": "5m"}

    # when a backtest is requested, nothing is sent before the commit
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/api/backtests", body, format="json")
        assert response.status_code == 202, response.content
        assert _broker_messages(ROUTING_QUEUE) == []
    for callback in callbacks:
        callback()

    # then one message for it is on the backtest queue
    try:
        messages = _broker_messages(ROUTING_QUEUE)
    finally:
        _purge(ROUTING_QUEUE)
    assert len(callbacks) == 1 and len(messages) == 1
    assert messages[0]["headers"]["task"] == "backtests.tasks.backtest_execute"
    args, kwargs, _ = json.loads(base64.b64decode(messages[0]["body"]))
    assert (args, kwargs) == ([response.json()["id"]], {})
