"""The candle streamer against the exchange simulator's WebSocket stream on a replay clock.

Real processes throughout: the simulator, one or two ``stream_candles`` processes and a Celery
worker, all on the test database and broker and sharing the replay clock.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from core.clock import market_now, market_to_real
from core.time_utils import compute_next_candle_close, ms_to_datetime
from execution.tasks import candle_close
from markets.models import Candle
from strategies.models import StrategyExecution
from subscriptions.services import subscription_cancel
from tests.factories import StrategyFactory, subscribe
from tests.workers import WorkerPool, other_pools_stop, wait_for
from tests.workers import test_database_url as database_url
from tooling.processes import ManageProcess, worker_env
from tooling.replay import ReplayMarket, replay_log_dir, replay_rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

STEP = timedelta(minutes=5)
SPEED = 150.0  # a 5m candle closes every 2 real seconds


@dataclass
class Harness:
    market: ReplayMarket
    env: dict[str, str]
    streamers: list[ManageProcess] = field(default_factory=list)

    def start_streamer(self) -> ManageProcess:
        log = replay_log_dir() / f"streamer-{self.market.port}-{len(self.streamers)}.log"
        streamer = ManageProcess(["stream_candles"], env=self.env, log_path=log).start()
        self.streamers.append(streamer)
        return streamer.wait_for_log("candle streamer running")

    def wait_closes(self, count: int) -> datetime:
        """Wait until ``count`` more candles have closed; returns the last close (market time)."""
        close = compute_next_candle_close(market_now(), "5m") + STEP * (count - 1)
        wait_for(lambda: market_now() >= close, timeout=count * 5 + 10, what="candle closes")
        return close


def _executions(strategy_id: int) -> list[StrategyExecution]:
    return list(StrategyExecution.objects.filter(strategy_id=strategy_id).order_by("id"))


def _settled_through(strategy_id: int, close: datetime) -> bool:
    rows = StrategyExecution.objects.filter(strategy_id=strategy_id, interval_end=close)
    return rows.exclude(status="running").exists()


def _assert_each_close_once(strategy_id: int) -> list[StrategyExecution]:
    executions = _executions(strategy_id)
    ends = [e.interval_end for e in executions]
    assert max(Counter(ends).values()) == 1
    # contiguous: no close was skipped between the first and the last execution
    ordered = sorted(ends)
    assert ordered == [ordered[0] + STEP * i for i in range(len(ordered))]
    # never a candle that had not closed by the market clock
    assert all(end <= market_now() for end in ends)
    return executions


@pytest.fixture
def replay(settings):
    rows = replay_rows(symbol="ETH/BTC", resolution="5m")
    start = ms_to_datetime(int(rows[300][0]))
    market = ReplayMarket(start=start, speed=SPEED)
    market.load(rows=rows, symbol="ETH/BTC", resolution="5m")
    market.load(
        rows=replay_rows(symbol="LTC/BTC", resolution="5m"), symbol="LTC/BTC", resolution="5m"
    )
    for name, value in market.settings_overrides().items():
        setattr(settings, name, value)
    env = market.process_env(
        worker_env(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            DATABASE_URL=database_url(),
            STREAM_REGISTRY_POLL_S="0.2",
            STREAM_HEARTBEAT_TTL_S="2",
            STREAM_BEAT_GRACE_S="0.5",
            STREAM_RECONNECT_MAX_S="1",
        )
    )
    harness = Harness(market, env)
    other_pools_stop()
    market.start_simulator(env=env, log_dir=replay_log_dir())
    extra = {k: env[k] for k in ("MARKET_CLOCK", "EXCHANGE_URL_OVERRIDES")}
    try:
        with WorkerPool(count=1, concurrency=1, env=extra):
            yield harness
    finally:
        for streamer in harness.streamers:
            streamer.stop()
        market.stop()


def test_stream_runs_each_closed_candle_once_and_follows_the_registry(replay):
    # given a strategy with a subscriber on a streamed market
    eth = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(eth)
    streamer = replay.start_streamer()
    started = time.time()

    # when three candles close
    last = replay.wait_closes(3)
    wait_for(lambda: _settled_through(eth.pk, last), what="the third close's execution")

    # then each closed candle ran exactly once, started by the stream, none for the open candle
    executions = _assert_each_close_once(eth.pk)
    assert [e for e in executions if e.trigger == "stream"]
    # and every candle the stream stored is final: stored after its close, with the final values
    streamed = Candle.objects.filter(
        exchange="binance", symbol="ETH/BTC", received_at__gte=_dt(started)
    )
    assert streamed.exists()
    for candle in streamed:
        close = candle.open_time + STEP
        assert market_to_real(close) <= candle.received_at
        source = Candle.objects.get(
            exchange=replay.market.source,
            symbol="ETH/BTC",
            resolution="5m",
            open_time=candle.open_time,
        )
        assert (candle.open, candle.high, candle.low, candle.close) == (
            source.open,
            source.high,
            source.low,
            source.close,
        )

    # when a subscription on another market is created while streaming
    ltc = StrategyFactory(symbol="LTC/BTC", settings={"signal": "HOLD"})
    ltc_sub = subscribe(ltc)

    # then that market is watched without a restart
    wait_for(
        lambda: any(e.trigger == "stream" for e in _executions(ltc.pk)),
        timeout=30,
        what="a streamed LTC/BTC execution",
    )

    # when its last subscriber leaves, the market is no longer watched
    subscription_cancel(subscription=ltc_sub)
    wait_for(lambda: "stopped watching binance LTC/BTC 5m" in streamer.log_text(), what="unwatch")
    count = len(_executions(ltc.pk))
    replay.wait_closes(2)
    assert len(_executions(ltc.pk)) == count


def test_beat_covers_a_dead_streamer_and_its_return_duplicates_nothing(replay):
    # given a streaming strategy
    eth = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(eth)
    streamer = replay.start_streamer()
    first = replay.wait_closes(1)
    wait_for(lambda: _settled_through(eth.pk, first), what="a streamed execution")

    # when the streamer is killed and beat fires at the next two closes
    streamer.kill(signal.SIGKILL)
    missed = []
    for _ in range(2):
        missed.append(replay.wait_closes(1))
        candle_close.delay(resolution="5m", trigger="beat")  # what django-celery-beat sends
    wait_for(lambda: _settled_through(eth.pk, missed[-1]), what="beat executions")

    # and the streamer comes back for two more closes
    replay.start_streamer()
    back = replay.wait_closes(2)
    wait_for(lambda: _settled_through(eth.pk, back), what="streamed executions after restart")

    # then beat ran the closes the streamer missed, and nothing ran twice
    executions = _assert_each_close_once(eth.pk)
    by_end = {e.interval_end: e for e in executions}
    assert all(by_end[close].trigger == "beat" for close in missed)
    assert by_end[back].trigger == "stream"


def test_a_beat_message_that_runs_after_the_next_close_loses_no_close(replay):
    # given a market covered by beat alone, whose first close beat has run
    eth = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(eth)
    first = replay.wait_closes(1)
    candle_close.delay(resolution="5m", trigger="beat")
    wait_for(lambda: _settled_through(eth.pk, first), what="the first beat execution")

    # when the next beat message reaches the worker only after the close after it
    late = replay.wait_closes(2)
    candle_close.delay(resolution="5m", trigger="beat")
    wait_for(lambda: _settled_through(eth.pk, late), what="the late beat run")

    # then every close from the first through the late one ran, once each, in order, started
    # by beat (on a loaded machine a run may find a further close too: it runs that one as well)
    executions = _assert_each_close_once(eth.pk)
    ends = [e.interval_end for e in executions]
    assert ends[0] == first and late in ends and len(ends) >= 3
    assert {e.trigger for e in executions} == {"beat"}


def test_a_late_execution_leaves_the_newer_closes_to_the_returning_streamer(replay):
    # given a streaming strategy whose streamer died
    eth = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(eth)
    streamer = replay.start_streamer()
    first = replay.wait_closes(1)
    wait_for(lambda: _settled_through(eth.pk, first), what="a streamed execution")
    streamer.kill(signal.SIGKILL)

    # when the execution of the next close runs only after two more closes (a busy worker),
    # fetching its candle over REST while the newer ones have closed too
    late = replay.wait_closes(1)
    newest = replay.wait_closes(2)
    candle_close.delay(resolution="5m", close_time=late.isoformat(), trigger="beat")
    wait_for(lambda: _settled_through(eth.pk, late), what="the late execution")

    # and the streamer comes back
    replay.start_streamer()
    wait_for(lambda: _settled_through(eth.pk, newest), what="the closes after the late one")

    # then the closes after the late one ran too, once each
    executions = _assert_each_close_once(eth.pk)
    by_end = {e.interval_end: e for e in executions}
    assert by_end[late].trigger == "beat"
    assert {by_end[late + STEP].trigger, by_end[newest].trigger} <= {"backfill", "stream"}


def test_two_streamers_and_a_gap_still_run_each_close_once_in_order(replay):
    # given two streamers watching the same market
    eth = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(eth)
    replay.start_streamer()
    replay.start_streamer()
    first = replay.wait_closes(1)
    wait_for(lambda: _settled_through(eth.pk, first), what="a streamed execution")

    # when the exchange drops every stream and refuses reconnects for three closes
    replay.market.drop_streams(refuse_s=3 * STEP.total_seconds() / SPEED)
    after = replay.wait_closes(5)
    wait_for(lambda: _settled_through(eth.pk, after), what="executions after the gap")

    # then every close ran once, the missed ones in order, and the stream resumed
    executions = _assert_each_close_once(eth.pk)
    assert [e.interval_end for e in executions] == sorted(e.interval_end for e in executions)
    assert executions[-1].trigger in ("stream", "backfill")
    assert len(executions) >= 6


def _dt(unix: float) -> datetime:
    from datetime import UTC

    return datetime.fromtimestamp(unix, UTC)


def test_a_polled_exchange_runs_each_close_once(replay):
    # given an exchange set to be polled over REST instead of streamed
    replay.env["STREAM_POLL_EXCHANGES"] = "binance"
    eth = StrategyFactory(settings={"signal": "HOLD"})
    subscribe(eth)
    streamer = replay.start_streamer()

    # when three candles close
    last = replay.wait_closes(3)
    wait_for(lambda: _settled_through(eth.pk, last), what="polled executions")

    # then each ran once, started by the poller, and no WebSocket was opened
    executions = _assert_each_close_once(eth.pk)
    assert executions[-1].trigger == "stream"
    assert replay.market.stream_status()["klines_sent"] == 0
    assert "failed" not in streamer.log_text()
