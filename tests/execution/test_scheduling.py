"""Which closes and markets the pipeline covers: beat's cursor (each run covers every close
since the previous run, once) and the markets the streamer watches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from execution.scheduling import beat_closes_due
from execution.streaming.services import stream_markets
from markets.registry import market_key, registry_register

STEP = timedelta(minutes=5)
CLOSE = datetime(2024, 6, 1, 6, 35, tzinfo=UTC)


def test_the_first_run_covers_its_own_close():
    # given no beat run before
    # when beat runs at a close
    due = beat_closes_due(resolution="5m", close_time=CLOSE)

    # then that close is due
    assert due == [CLOSE]


def test_a_second_run_for_the_same_close_finds_nothing_due():
    # given a beat run at a close
    beat_closes_due(resolution="5m", close_time=CLOSE)

    # when another message for the same close runs (beat ticked twice, or a redelivery)
    due = beat_closes_due(resolution="5m", close_time=CLOSE)

    # then nothing is dispatched again
    assert due == []


def test_a_late_run_covers_the_closes_it_skipped_oldest_first():
    # given a beat run at a close
    beat_closes_due(resolution="5m", close_time=CLOSE)

    # when the next run happens only after two more closes
    due = beat_closes_due(resolution="5m", close_time=CLOSE + 3 * STEP)

    # then the three closes since are due, in order
    assert due == [CLOSE + STEP, CLOSE + 2 * STEP, CLOSE + 3 * STEP]


def test_resolutions_keep_their_own_cursor():
    # given a 5m beat run
    beat_closes_due(resolution="5m", close_time=CLOSE)

    # when the 1m beat runs for the first time
    due = beat_closes_due(resolution="1m", close_time=CLOSE + timedelta(minutes=2))

    # then only its own close is due
    assert due == [CLOSE + timedelta(minutes=2)]


def test_a_long_outage_catches_up_a_bounded_number_of_closes(settings):
    # given a catch-up limit of 3 and a beat run long ago
    settings.BEAT_CATCHUP_MAX_CLOSES = 3
    beat_closes_due(resolution="5m", close_time=CLOSE)

    # when beat comes back 20 closes later
    due = beat_closes_due(resolution="5m", close_time=CLOSE + 20 * STEP)

    # then the newest 3 closes are due
    assert due == [CLOSE + 18 * STEP, CLOSE + 19 * STEP, CLOSE + 20 * STEP]


def test_a_clock_that_went_back_starts_over_at_its_close():
    # given a beat run at a later close (a replay that has since restarted)
    beat_closes_due(resolution="5m", close_time=CLOSE + 10 * STEP)

    # when beat runs at an earlier close
    due = beat_closes_due(resolution="5m", close_time=CLOSE)

    # then that close is due and the next run continues from it
    assert due == [CLOSE]
    assert beat_closes_due(resolution="5m", close_time=CLOSE + STEP) == [CLOSE + STEP]


def test_the_streamer_watches_every_registered_market_but_paper_ones():
    # given strategies registered on an exchange's market and on a paper market
    registry_register(
        strategy_id=1, key=market_key(exchange="binance", symbol="ETH/BTC", resolution="5m")
    )
    registry_register(
        strategy_id=2, key=market_key(exchange="paper", symbol="ETH/BTC", resolution="5m")
    )

    # when the streamer lists the markets to watch
    markets = stream_markets()

    # then the paper market, which no exchange streams, is not among them
    assert markets == [("binance", "ETH/BTC", "5m")]
