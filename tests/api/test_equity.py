from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from subscriptions.models import EquityPoint
from tests.api.helpers import field_errors
from tests.factories import StrategyFactory, subscribe

DAY = datetime(2030, 5, 1, tzinfo=UTC)


def _curve(subscription, values: list[tuple[timedelta, str]]) -> None:
    """Stored close points: (time after DAY, equity) on 1000 of capital."""
    for offset, equity in values:
        EquityPoint.objects.create(
            subscription=subscription,
            time=DAY + offset,
            kind="close",
            equity=Decimal(equity),
            capital=Decimal("1000"),
            realized=Decimal("0"),
            unrealized=Decimal(equity) - Decimal("1000"),
            fees=Decimal("0"),
        )


def _url(subscription, suffix: str = "equity") -> str:
    return f"/api/strategies/subscriptions/{subscription.pk}/{suffix}"


@pytest.fixture
def mine(me):
    subscription = subscribe(StrategyFactory(), user=me)
    h = timedelta(hours=1)
    _curve(subscription, [(h, "1010"), (h * 1.5, "1020"), (h * 2.2, "990"), (h * 26, "1050")])
    return subscription


@pytest.mark.django_db
def test_the_series_in_the_quote_currency(api, mine):
    # when I ask for my subscription's equity since DAY
    response = api.get(_url(mine), {"start": DAY.isoformat()})
    # then every stored point is there, oldest first, with the currency
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["currency"] == "BTC" and body["resolution"] is None
    assert [Decimal(p["equity"]) for p in body["points"]] == [1010, 1020, 990, 1050]
    first = body["points"][0]
    assert set(first) == {"time", "kind", "equity", "realized", "unrealized", "capital"}
    assert Decimal(first["capital"]) == 1000 and first["kind"] == "close"


@pytest.mark.django_db
def test_the_subscribe_point_starts_the_curve(api, mine):
    points = api.get(_url(mine)).json()["points"]
    assert points[0]["kind"] == "capital_change" and Decimal(points[0]["equity"]) == 1000


@pytest.mark.django_db
def test_resolution_keeps_the_last_point_of_each_bucket(api, mine):
    # when I ask for hourly and daily points
    hourly = api.get(_url(mine), {"start": DAY.isoformat(), "resolution": "1h"}).json()
    daily = api.get(_url(mine), {"start": DAY.isoformat(), "resolution": "1d"}).json()
    # then the 01:00 hour keeps 01:30's 1020, and each UTC day its last point
    assert [Decimal(p["equity"]) for p in hourly["points"]] == [1020, 990, 1050]
    assert [Decimal(p["equity"]) for p in daily["points"]] == [990, 1050]
    assert daily["resolution"] == "1d"


@pytest.mark.django_db
def test_start_and_end_bound_the_series(api, mine):
    end = DAY + timedelta(hours=3)
    points = api.get(_url(mine), {"start": DAY.isoformat(), "end": end.isoformat()}).json()
    assert [Decimal(p["equity"]) for p in points["points"]] == [1010, 1020, 990]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"resolution": "7m"}, "resolution"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2030-05-02T00:00:00Z", "end": "2030-05-01T00:00:00Z"}, "end"),
    ],
)
def test_bad_params_are_400_with_field_errors(api, mine, params, field):
    for suffix in ("equity", "equity.png"):
        response = api.get(_url(mine, suffix), params)
        assert response.status_code == 400, response.content
        assert field in field_errors(response)


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["equity", "equity.png", "equity.svg"])
def test_another_users_subscription_is_not_found(their_api, mine, suffix):
    assert their_api.get(_url(mine, suffix)).status_code == 404


@pytest.mark.django_db
def test_png_chart(api, mine):
    response = api.get(_url(mine, "equity.png"), HTTP_ACCEPT="image/png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n") and len(response.content) > 5000


@pytest.mark.django_db
def test_svg_chart_draws_the_curve_and_the_drawdown(api, mine):
    response = api.get(_url(mine, "equity.svg"), HTTP_ACCEPT="image/*")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    svg = response.content.decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "equity (BTC)" in svg and "drawdown %" in svg
    assert svg.count("<path") > 10  # the lines and the filled drawdown, not an empty frame
