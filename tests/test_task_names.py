"""Task names are an interface: beat rows and queued messages hold them across deploys.

Moving a task to the app whose work it does must keep its name, so a message sent under the old
name still reaches it.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from config.celery_app import app
from markets.schedule import TASK_NAME
from tests.factories import StrategyExecutionFactory
from tests.workers import wait_for
from trades.tasks import fanout_orders

# Every name a beat row, the beat schedule or a queued message may hold.
HELD_NAMES = {
    "execution.tasks.candle_close": "execution.tasks.candle_close",
    "execution.tasks.execute_strategy": "execution.tasks.execute_strategy",
    "execution.tasks.execute_strategies": "execution.tasks.execute_strategies",
    "execution.tasks.fanout_orders": "trades.tasks.fanout_orders",
    "trades.tasks.orders_sync_open": "trades.tasks.orders_sync_open",
    "trades.tasks.orders_cancel_stale": "trades.tasks.orders_cancel_stale",
    "trades.tasks.equity_daily": "trades.tasks.equity_daily",
    "trades.tasks.credentials_recheck_dispatch": "trades.tasks.credentials_recheck_dispatch",
    "trades.tasks.credentials_recheck_batch": "trades.tasks.credentials_recheck_batch",
    "trades.tasks.reconcile_dispatch": "trades.tasks.reconcile_dispatch",
    "trades.tasks.reconcile_batch": "trades.tasks.reconcile_batch",
    "backtests.tasks.records_refresh": "backtests.tasks.records_refresh",
}


@pytest.mark.parametrize(("name", "home"), sorted(HELD_NAMES.items()))
def test_each_held_task_name_is_served_by_the_module_that_does_the_work(name, home):
    # given the worker's task registry
    app.loader.import_default_modules()

    # when a held name is looked up
    task = app.tasks[name]

    # then the task lives where its work is
    assert f"{task.run.__module__}.{task.run.__name__}" == home


def test_beat_rows_and_the_schedule_name_only_held_tasks():
    # given the names beat sends: the candle-close rows and the static schedule
    names = {TASK_NAME} | {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    # when they are checked against the held names
    # then each is one of them
    assert names <= set(HELD_NAMES)


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_message_under_the_old_fanout_name_runs_on_a_worker(celery_workers):
    # given a finished execution whose fan-out has not run
    execution = StrategyExecutionFactory(status="success")

    # when a message queued before the move, under the old name, reaches a worker
    app.send_task(
        "execution.tasks.fanout_orders",
        kwargs={"execution_id": execution.pk, "subscription_ids": []},
        queue=settings.FANOUT_QUEUE,
    )

    # then the fan-out ran: it stamped the execution
    wait_for(
        lambda: type(execution).objects.get(pk=execution.pk).last_order_at is not None,
        timeout=30,
        what="the fan-out under its old name",
    )
    assert fanout_orders.name == "execution.tasks.fanout_orders"
