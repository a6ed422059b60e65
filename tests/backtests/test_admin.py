"""Backtests in the admin: listed and shown readably, with their chart and report, never edited."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backtests.models import Backtest, BacktestTrade
from backtests.services import backtest_run
from tests.api.helpers import admin_url
from tests.factories import BacktestFactory, UserFactory, backtest_of, stored_candles
from tests.strategy_code import SMA_CROSSOVER

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished():
    """A backtest of the SMA crossover over 300 real candles, run to the end."""
    stored_candles(count=300)
    backtest = backtest_run(
        backtest_id=backtest_of(owner=UserFactory(username="quant"), code=SMA_CROSSOVER).pk
    )
    assert backtest.status == Backtest.Status.DONE, backtest.error
    return backtest


def test_the_list_shows_market_period_status_progress_return_and_trades(admin_client, finished):
    # given a finished backtest and a queued one
    BacktestFactory(symbol="LTC/BTC")

    # when an operator opens the list
    response = admin_client.get(admin_url(Backtest, "changelist"))

    # then each row says what was tested, how far it got and how it did
    assert response.status_code == 200
    html = response.content.decode()
    assert "quant" in html and "binance ETH/BTC 5m" in html and "binance LTC/BTC 5m" in html
    assert f"{finished.start:%Y-%m-%d %H:%M} → {finished.end:%Y-%m-%d %H:%M}" in html
    assert f"{finished.metrics['net_return_pct']} %" in html
    assert f"100% ({finished.candles_done} of {finished.candles_total})" in html
    trades = BacktestTrade.objects.filter(backtest=finished).count()
    assert trades and f'<td class="field-trade_count">{trades}</td>' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "done"}, 1),
        ({"status__exact": "queued"}, 1),
        ({"method__exact": "per_candle"}, 2),
        ({"method__exact": "vectorised"}, 0),
    ],
)
def test_the_list_filters_by_status_and_method(admin_client, finished, query, expected):
    BacktestFactory()
    response = admin_client.get(admin_url(Backtest, "changelist"), query)
    assert response.context["cl"].result_count == expected


def test_the_list_never_loads_the_series(admin_client, finished):
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(admin_url(Backtest, "changelist")).status_code == 200
    selects = [q["sql"] for q in queries if 'FROM "backtests_backtest"' in q["sql"]]
    assert selects and all('"backtests_backtest"."series"' not in sql for sql in selects)


def test_a_finished_backtest_reads_as_figures_with_its_trades_and_files(admin_client, finished):
    response = admin_client.get(admin_url(Backtest, "change", finished.pk))
    assert response.status_code == 200
    html = response.content.decode()
    # the figures under their names and units, not as JSON
    assert "Net return" in html and "Max drawdown" in html and "Closed trades" in html
    assert "net_return_pct" not in html
    # the trades, read only, without their metadata
    inline = response.context["inline_admin_formsets"][0]
    assert len(inline.formset.forms) == BacktestTrade.objects.filter(backtest=finished).count()
    assert "metadata" not in inline.formset.forms[0].fields
    # links to its chart and report
    for name in ("chart.png", "chart.svg", "report.html"):
        assert f"/admin/backtests/backtest/{finished.pk}/{name}" in html
    # and nothing to save
    assert 'name="_save"' not in html


def test_the_admin_serves_the_chart_and_the_report(admin_client, finished):
    base = f"/admin/backtests/backtest/{finished.pk}"
    png = admin_client.get(f"{base}/chart.png")
    svg = admin_client.get(f"{base}/chart.svg")
    report = admin_client.get(f"{base}/report.html")
    assert (png.status_code, png["Content-Type"]) == (200, "image/png")
    assert png.content.startswith(b"\x89PNG")
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert report.status_code == 200 and report["Content-Type"].startswith("text/html")
    assert f"Backtest #{finished.pk}" in report.content.decode()
    # nothing in a file drawn from user input may run
    assert "sandbox" in report["Content-Security-Policy"]


def test_a_backtest_that_is_not_done_has_no_files_yet(admin_client):
    queued = BacktestFactory()
    page = admin_client.get(admin_url(Backtest, "change", queued.pk)).content.decode()
    assert "once it is done (it is queued)" in page
    response = admin_client.get(f"/admin/backtests/backtest/{queued.pk}/chart.png")
    assert response.status_code == 409


def test_the_files_are_for_staff_only(client, finished):
    client.force_login(UserFactory())
    response = client.get(f"/admin/backtests/backtest/{finished.pk}/report.html")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_backtests_cannot_be_added_changed_or_deleted(admin_client, finished):
    change = admin_url(Backtest, "change", finished.pk)
    assert admin_client.post(change, {"status": "queued"}).status_code == 403
    assert admin_client.get(admin_url(Backtest, "add")).status_code == 403
    delete = admin_url(Backtest, "delete", finished.pk)
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Backtest.objects.get(pk=finished.pk).status == "done"
