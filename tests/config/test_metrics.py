"""``/metrics``: the token, and counters that agree with the database after a real worker run."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from config.celery_app import app
from config.metrics import PRIORITY_STEPS
from core.redis_client import get_redis
from core.time_utils import datetime_to_ms
from execution.tasks import candle_close
from markets.registry import INDEX_KEY
from strategies.models import StrategyExecution
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from tests.workers import WorkerPool, other_pools_stop, wait_for
from trades.models import Order

TOKEN = "metrics-test-token"
START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)

Samples = Counter[tuple[str, tuple[tuple[str, str], ...]]]


def _scrape(client: Client) -> Samples:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    samples: Samples = Counter()
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return samples


def _by(samples: Samples, name: str, label: str) -> Counter[str]:
    """A counter's samples added up by one label."""
    out: Counter[str] = Counter()
    for (sample, labels), value in samples.items():
        if sample == name:
            out[dict(labels)[label]] += int(value)
    return +out


@pytest.mark.django_db
def test_metrics_want_the_bearer_token(settings):
    # given metrics switched on with a token
    settings.METRICS_TOKEN = TOKEN
    client = Client()

    # when scraped without a token, with a wrong one, and with the right one
    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    right = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    # then only the right token reads them
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain")
    assert b"signalfan_celery_queue_length" in right.content


@pytest.mark.django_db
def test_metrics_are_off_without_a_token(settings):
    # given no token configured
    settings.METRICS_TOKEN = ""

    # when scraped, even with some bearer token
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything")

    # then the endpoint is not there
    assert response.status_code == 404


@pytest.mark.django_db
def test_scrape_reads_queue_depths_streamer_and_registered_markets(settings):
    # given two tasks waiting on a queue no worker takes, and a registered market
    settings.METRICS_TOKEN = TOKEN
    settings.BACKTEST_QUEUE = "metrics-test-queue"
    queues = [settings.BACKTEST_QUEUE + step for step in PRIORITY_STEPS]
    connection = app.connection_for_write()
    broker = connection.default_channel.client
    broker.delete(*queues)
    try:
        for _ in range(2):
            candle_close.apply_async(kwargs={"resolution": "5m"}, queue=settings.BACKTEST_QUEUE)
        get_redis().sadd(INDEX_KEY, "candle:binance:ETH/BTC:5m")

        # when scraped
        samples = _scrape(Client())
    finally:
        broker.delete(*queues)
        connection.release()

    # then the queue's depth, the streamer (none runs) and the market's interval show
    assert samples[("signalfan_celery_queue_length", (("queue", "metrics-test-queue"),))] == 2
    assert samples[("signalfan_streamer_up", ())] == 0
    market = (("exchange", "binance"), ("resolution", "5m"), ("symbol", "ETH/BTC"))
    assert samples[("signalfan_market_interval_seconds", market)] == 300


def _settled(strategy_id: int, interval_start: datetime) -> bool:
    row = StrategyExecution.objects.filter(
        strategy_id=strategy_id, interval_start=interval_start
    ).first()
    if row is None or not row.is_final:
        return False
    return row.status != "success" or (
        row.fanout_dispatched_at is not None and row.fanout_done >= row.fanout_total
    )


@pytest.fixture
def own_workers(tmp_path, settings):
    """Workers of this test's alone, writing their samples to a directory of their own that
    the scrape reads: the counters are theirs only. In the run's shared directory, another
    process of the run (a worker of an earlier test still finishing a task, a process it
    started) could count its own execution or order in this test's figures."""
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path / "metrics")
    Path(settings.PROMETHEUS_MULTIPROC_DIR).mkdir()
    other_pools_stop()  # they would take this test's tasks
    app.control.purge()  # earlier tests' tasks still queued
    with WorkerPool(env={"PROMETHEUS_MULTIPROC_DIR": settings.PROMETHEUS_MULTIPROC_DIR}) as pool:
        yield pool


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_counters_after_a_worker_run_equal_what_the_database_holds(own_workers, settings):
    # given strategies that enter (three paper subscribers), hold, and fail, on a loaded market
    settings.METRICS_TOKEN = TOKEN
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=30))
    entering = StrategyFactory(settings={"signal": "LONG"})
    holding = StrategyFactory(settings={"signal": "HOLD"})
    failing = StrategyFactory(settings={"signal": "BOGUS"})
    for strategy in (entering, entering, entering, holding, failing):
        subscribe(strategy)
    client = Client()
    before = _scrape(client)

    # when two candles close and the worker runs every execution and fan-out
    for close in (START + STEP * 11, START + STEP * 12):
        candle_close.delay(resolution="5m", close_time=close.isoformat(), trigger="replay")
        for strategy in (entering, holding, failing):
            wait_for(lambda s=strategy, c=close: _settled(s.pk, c - STEP), what="execution")
    after = _scrape(client)
    after.subtract(before)

    # then executions by status and orders by status are what the database holds
    executions = Counter(StrategyExecution.objects.values_list("status", flat=True))
    assert executions == Counter({"success": 2, "no_signal": 2, "failed": 2})
    assert _by(after, "signalfan_executions_total", "status") == executions
    assert _by(after, "signalfan_executions_total", "trigger") == {"replay": 6}
    orders = Counter(Order.objects.values_list("status", flat=True))
    assert orders == Counter({"filled": 3})  # the second LONG finds its subscribers holding
    assert _by(after, "signalfan_orders_total", "status") == orders
    assert _by(after, "signalfan_orders_total", "exchange") == {"paper": 3}
    # and the histograms counted one observation per execution and per fan-out
    assert _by(after, "signalfan_execution_duration_seconds_count", "status") == executions
    assert _by(after, "signalfan_fanout_subscribers_count", "exchange") == {"binance": 2}
    assert _by(after, "signalfan_sandbox_duration_seconds_count", "outcome") == {"ok": 6}


@pytest.mark.parametrize("hook", ["gunicorn", "celery"])
def test_an_exited_process_takes_its_live_gauges_along_and_leaves_its_counters(hook):
    # given the sample files of a process of this host that exited
    from types import SimpleNamespace

    from config import gunicorn
    from config.celery_app import _metrics_process_dead
    from core.metrics import _identifier

    directory = Path(django_settings.PROMETHEUS_MULTIPROC_DIR)
    pid = 4_000_000 + (hook == "celery")  # above any real pid
    live = directory / f"gauge_livesum_{_identifier(pid)}.db"
    counter = directory / f"counter_{_identifier(pid)}.db"
    live.touch()
    counter.touch()
    try:
        # when its exit is reported by the hook
        if hook == "gunicorn":
            gunicorn.child_exit(None, SimpleNamespace(pid=pid))
        else:
            _metrics_process_dead(pid=pid)

        # then its live gauges are gone, its counters still count
        assert not live.exists() and counter.exists()
    finally:
        live.unlink(missing_ok=True)
        counter.unlink(missing_ok=True)
