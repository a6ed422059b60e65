"""A strategy's track record over the API, and the marketplace ordered by it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from backtests.models import StrategyRecord
from backtests.record import record_follow, record_refresh
from core.time_utils import datetime_to_ms
from tests.factories import StrategyExecutionFactory, StrategyFactory, flat_candles, subscribe

pytestmark = pytest.mark.django_db

START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
ROWS = flat_candles(start_ms=datetime_to_ms(START), count=40)


def _follow(strategy, index: int, signal: str = "HOLD", trigger: str = "beat") -> bool:
    """One finished real-time execution of the strategy, fed to its record."""
    execution = StrategyExecutionFactory(
        strategy=strategy,
        interval_start=START + STEP * index,
        interval_end=START + STEP * (index + 1),
        trigger=trigger,
        status="no_signal" if signal == "HOLD" else "success",
        signal={"signal": signal},
    )
    return record_follow(execution=execution, candle=ROWS[index])


def _traded(strategy, *, rising: bool) -> StrategyRecord:
    """A record of one long round trip: it gains on the ramp's candles, or loses if entered
    on a close higher than the exit."""
    entry, exit_ = (2, 20) if rising else (20, 21)
    _follow(strategy, entry, "LONG")
    _follow(strategy, exit_, "EXIT_LONG")
    record = StrategyRecord.objects.get(strategy=strategy)
    record_refresh(record=record, now=START + STEP * 30)
    return record


def test_performance_carries_figures_units_currency_and_the_curve(api, me):
    # given my strategy with a record of one winning round trip
    strategy = StrategyFactory(owner=me)
    _traded(strategy, rising=True)

    # when its performance is read
    body = api.get(f"/api/strategies/{strategy.pk}/performance").json()

    # then the figures are there, in percent, in the quote currency, from a capital of 1
    assert body["currency"] == "BTC" and body["reference_account"]["capital"] == "1"
    assert body["units"]["returns"] == "percent"
    assert Decimal(body["figures"]["return_total_pct"]) > 0 and body["figures"]["trades"] == 1
    assert body["equity"]["resolution"] == "5m" and len(body["equity"]["times"]) == 2
    assert Decimal(body["equity"]["equity"][-1]) > 1


def test_the_curve_is_downsampled_on_request(api, me):
    # given a record of twelve 5m closes (an hour)
    strategy = StrategyFactory(owner=me)
    for index in range(12, 24):
        _follow(strategy, index)

    # when it is asked hourly, and finer than the strategy's candles
    hourly = api.get(f"/api/strategies/{strategy.pk}/performance?resolution=1h")
    finer = api.get(f"/api/strategies/{strategy.pk}/performance?resolution=1m")

    # then one point per hour is given, and the finer one refused
    assert hourly.status_code == 200 and len(hourly.json()["equity"]["times"]) == 1
    assert finer.status_code == 400


def test_subscribers_are_reported_by_mode_in_return_terms_only(api, them):
    # given their public strategy with a paper subscriber who made a profit
    strategy = StrategyFactory(owner=them, is_public=True)
    sub = subscribe(strategy, capital="200")
    type(sub).objects.filter(pk=sub.pk).update(realized_pnl=Decimal("10"))
    _traded(strategy, rising=True)

    # when I read its performance
    response = api.get(f"/api/strategies/{strategy.pk}/performance")

    # then subscribers show as a count and a return, never a capital, a PnL or a name
    subscribers = response.json()["subscribers"]
    assert subscribers["paper"] == {"subscriptions": 1, "realized_return_pct": "5.0000"}
    assert subscribers["live"] == {"subscriptions": 0, "realized_return_pct": None}
    text = response.content.decode()
    assert sub.user.username not in text and them.username not in text
    assert '"200' not in text and "realized_pnl" not in text


def test_another_users_private_strategy_is_not_found(api, them):
    # given their private strategy with a record
    strategy = StrategyFactory(owner=them)
    _follow(strategy, 3)

    # when I ask for its performance and its chart
    # then neither exists for me
    assert api.get(f"/api/strategies/{strategy.pk}/performance").status_code == 404
    assert api.get(f"/api/strategies/{strategy.pk}/performance.png").status_code == 404


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_the_record_is_drawn(api, me, fmt, magic):
    # given a record with a round trip
    strategy = StrategyFactory(owner=me)
    _traded(strategy, rising=True)

    # when its chart is asked
    response = api.get(f"/api/strategies/{strategy.pk}/performance.{fmt}")

    # then a real picture comes back
    assert response.status_code == 200 and response["Content-Type"].startswith("image/")
    assert magic in response.content[:400] and len(response.content) > 10_000


def test_marketplace_orders_and_filters_by_the_record(api, them):
    # given three marketplace strategies: a winner, a loser, and one without a record
    winner = StrategyFactory(owner=them, is_public=True, is_marketplace=True)
    loser = StrategyFactory(owner=them, is_public=True, is_marketplace=True)
    fresh = StrategyFactory(owner=them, is_public=True, is_marketplace=True)
    StrategyFactory(owner=them, is_public=True)  # not in the marketplace
    _traded(winner, rising=True)
    _traded(loser, rising=False)
    url = "/api/strategies?is_marketplace=true"

    # when the marketplace is ordered by 30-day return, both ways, and filtered
    best = api.get(f"{url}&ordering=-return_total").json()["results"]
    worst = api.get(f"{url}&ordering=return_total").json()["results"]
    gaining = api.get(f"{url}&return_30d_gte=0").json()["results"]
    by_sharpe = api.get(f"{url}&ordering=-sharpe")

    # then the winner leads, the loser trails it, and the one without a record comes last
    assert [row["id"] for row in best] == [winner.pk, loser.pk, fresh.pk]
    assert [row["id"] for row in worst] == [loser.pk, winner.pk, fresh.pk]
    assert [row["id"] for row in gaining] == [winner.pk]
    assert by_sharpe.status_code == 200 and len(by_sharpe.json()["results"]) == 3
    # and each row carries its figures
    assert Decimal(best[0]["performance"]["return_total_pct"]) > 0
    assert best[2]["performance"] is None


def test_marketplace_filters_by_drawdown(api, them):
    # given a winner with a small drawdown and a loser with a deeper one
    calm = StrategyFactory(owner=them, is_public=True, is_marketplace=True)
    rough = StrategyFactory(owner=them, is_public=True, is_marketplace=True)
    _traded(calm, rising=True)
    _traded(rough, rising=False)
    calm_dd = StrategyRecord.objects.get(strategy=calm).max_drawdown_pct
    rough_dd = StrategyRecord.objects.get(strategy=rough).max_drawdown_pct
    assert calm_dd < rough_dd

    # when the marketplace is filtered on a drawdown between the two
    limit = (calm_dd + rough_dd) / 2
    rows = api.get(f"/api/strategies?is_marketplace=true&max_drawdown_lte={limit}").json()

    # then only the calmer one is listed
    assert [row["id"] for row in rows["results"]] == [calm.pk]


def test_an_older_close_is_ignored(me):
    # given a record that followed a close
    strategy = StrategyFactory(owner=me)
    assert _follow(strategy, 10, "LONG")

    # when an older close, or a replay, arrives
    # then the record does not move
    assert not _follow(strategy, 9, "EXIT_LONG", trigger="backfill")
    assert not _follow(strategy, 11, "EXIT_LONG", trigger="replay")
    assert StrategyRecord.objects.get(strategy=strategy).position is not None
