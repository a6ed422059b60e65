"""Executions and candles in the admin: readable, never editable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from execution.selectors import executions_by_status
from execution.streaming.services import stream_heartbeat
from markets.models import Candle
from markets.registry import market_key, registry_register
from strategies.models import Strategy, StrategyExecution
from tests.api.helpers import admin_url, make_execution
from tests.factories import StrategyFactory, flat_candles, load_candles
from trades.models import Order, Trade


@pytest.fixture
def failed_execution():
    return make_execution(
        StrategyFactory(),
        status="failed",
        signal={"signal": "LONG", "price": 0.05, "metadata": {"why": "cross <up>"}},
        error="Traceback (most recent call last):\n  ZeroDivisionError: division by zero",
        logs="computing sma\nfast=1.2",
    )


@pytest.mark.django_db
def test_execution_page_shows_signal_error_and_logs_readably(admin_client, failed_execution):
    response = admin_client.get(admin_url(StrategyExecution, "change", failed_execution.pk))
    assert response.status_code == 200
    html = response.content.decode()
    # the signal as indented JSON (escaped), the error and the logs as preformatted text
    assert "&quot;signal&quot;: &quot;LONG&quot;" in html and "cross &lt;up&gt;" in html
    assert "ZeroDivisionError: division by zero" in html and "fast=1.2" in html
    listing = admin_client.get(admin_url(StrategyExecution, "changelist")).content.decode()
    assert "LONG" in listing and "Traceback" in listing


@pytest.mark.django_db
def test_executions_cannot_be_added_changed_or_deleted(admin_client, failed_execution):
    change = admin_url(StrategyExecution, "change", failed_execution.pk)
    assert admin_client.post(change, {"status": "success"}).status_code == 403
    assert admin_client.get(admin_url(StrategyExecution, "add")).status_code == 403
    delete = admin_url(StrategyExecution, "delete", failed_execution.pk)
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert StrategyExecution.objects.get(pk=failed_execution.pk).status == "failed"


@pytest.mark.django_db
def test_executions_are_searchable_by_strategy_and_error(admin_client, failed_execution):
    url = admin_url(StrategyExecution, "changelist")
    by_error = admin_client.get(url, {"q": "ZeroDivision"})
    by_id = admin_client.get(url, {"q": str(failed_execution.strategy_id)})
    assert by_error.context["cl"].result_count == 1 and by_id.context["cl"].result_count == 1
    assert admin_client.get(url, {"q": "no such thing"}).context["cl"].result_count == 0


@pytest.mark.django_db
def test_candles_are_read_only(admin_client):
    load_candles(rows=flat_candles(start_ms=1515560100000, count=2))
    candle = Candle.objects.first()
    assert admin_client.get(admin_url(Candle, "changelist")).status_code == 200
    assert admin_client.get(admin_url(Candle, "add")).status_code == 403
    change = admin_url(Candle, "change", candle.pk)
    assert admin_client.post(change, {"close": "1"}).status_code == 403


@pytest.mark.django_db
def test_execution_list_reads_as_an_operator_needs(admin_client, everything):
    # given a manual replay of a historical candle (9.402… ms, a drift of nine years) and a
    # failed real-time run with a traceback
    listing = admin_client.get(admin_url(StrategyExecution, "changelist")).content.decode()
    # then the duration is rounded, the replay has no drift, the error is its first line
    assert "9 ms" in listing and "9.402" not in listing and "279737523955" not in listing
    assert "exception: ZeroDivisionError: division by zero (line 7)" in listing
    assert "most recent call last" not in listing
    # and times are UTC to the second
    started = everything.failed.started_at
    assert f"{started:%Y-%m-%d %H:%M:%S}" in listing


@pytest.mark.django_db
def test_execution_page_links_its_trades_and_orders_and_shows_milliseconds(
    admin_client, everything
):
    execution = everything.trade.execution
    page = admin_client.get(admin_url(StrategyExecution, "change", execution.pk)).content.decode()
    trades = admin_url(Trade, "changelist") + f"?execution__id__exact={execution.pk}"
    orders = admin_url(Order, "changelist") + f"?execution__id__exact={execution.pk}"
    assert f'href="{trades}"' in page and f'href="{orders}"' in page
    assert admin_url(Order, "change", everything.order.pk) in page  # the orders inline
    started = execution.started_at
    assert f"{started:%Y-%m-%d %H:%M:%S}.{started.microsecond // 1000:03d} UTC" in page
    # and the filtered lists hold the trade and the order
    assert admin_client.get(trades).context["cl"].result_count == 1
    assert admin_client.get(orders).context["cl"].result_count == 1


@pytest.mark.django_db
def test_a_trade_links_its_orders_and_an_order_its_trade_and_execution(admin_client, everything):
    trade, order = everything.trade, everything.order
    page = admin_client.get(admin_url(Trade, "change", trade.pk)).content.decode()
    assert admin_url(Order, "changelist") + f"?trade__id__exact={trade.pk}" in page
    assert admin_url(Order, "change", order.pk) in page
    assert admin_url(StrategyExecution, "change", trade.execution_id) in page
    back = admin_client.get(admin_url(Order, "change", order.pk)).content.decode()
    assert admin_url(Trade, "change", trade.pk) in back
    assert admin_url(StrategyExecution, "change", order.execution_id) in back
    listing = admin_client.get(admin_url(Order, "changelist")).content.decode()
    assert admin_url(Trade, "change", trade.pk) in listing
    assert ">2<" in listing and "2.000000000000" not in listing  # amounts without padding


@pytest.mark.django_db
def test_strategy_list_shows_last_run_failures_and_record(admin_client, everything):
    response = admin_client.get(admin_url(Strategy, "changelist"))
    row = next(r for r in response.context["cl"].result_list if r.pk == everything.strategy.pk)
    # the last run is the latest candle's (the failed real-time one), one failure in 24 h
    assert row.last_run_status == "failed" and row.failed_24h == 1
    page = response.content.decode()
    assert f"{everything.failed.started_at:%Y-%m-%d %H:%M:%S}" in page
    assert "3.21 %" in page  # the record's 30-day return
    failures = admin_url(StrategyExecution, "changelist")
    assert (
        f"{failures}?strategy__id__exact={everything.strategy.pk}&amp;status__exact=failed" in page
    )


# --- the operator overview -------------------------------------------------------------------
@pytest.mark.django_db
def test_the_overview_is_for_staff_only(client, user):
    overview = reverse("admin-overview")
    assert client.get(overview).status_code == 302  # to the login
    client.force_login(user)  # not staff
    response = client.get(overview)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]


@pytest.mark.django_db
def test_the_overview_is_linked_from_the_admin_index(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("admin-overview")}"' in index


@pytest.mark.django_db
def test_the_overview_shows_the_days_failures_rejections_pauses_and_markets(
    admin_client, everything, django_assert_max_num_queries
):
    # given the registry runs the strategy on a streamed market (its newest candle years old)
    # and on a paper market, and a streamer's heartbeat is fresh
    strategy = everything.strategy
    registry_register(
        strategy_id=strategy.pk,
        key=market_key(exchange="binance", symbol="ETH/BTC", resolution="5m"),
    )
    registry_register(
        strategy_id=strategy.pk, key=market_key(exchange="paper", symbol="ETH/BTC", resolution="5m")
    )
    stream_heartbeat(streamer_id="host:42")

    # when an operator opens the overview
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse("admin-overview"))

    # then it counts the failed run and the two orders of the day, by status
    assert response.status_code == 200
    overview = response.context["overview"]
    assert overview.failures_hour == 1 and overview.failures_day == 1
    orders = {row.status: row.day for row in overview.orders}
    assert orders["rejected"] == 1 and orders["filled"] == 1
    page = response.content.decode()
    # with the rejected order's error, the pause's reason and the streamer
    assert "Account has insufficient &lt;BTC&gt;" in page
    assert "maximum drawdown 12.3 % reached (limit 10 %)" in page and overview.paused_total == 1
    assert "host:42" in page
    # and the markets: the streamed one late, the paper one not streamed
    markets = {m.exchange: m for m in overview.markets}
    assert markets["binance"].late and markets["binance"].streamed
    assert markets["binance"].last_close == datetime(2018, 1, 10, 5, 10, tzinfo=UTC)
    assert not markets["paper"].streamed and not markets["paper"].late
    # and each figure links the list behind it
    assert admin_client.get(response.context["failed_url"]).context["cl"].result_count == 1
    rejected = next(r for r in response.context["order_rows"] if r.status == "rejected")
    assert admin_client.get(rejected.hour_url).context["cl"].result_count == 1


@pytest.mark.django_db
def test_overview_counts_keep_to_their_windows():
    # given runs started 30 minutes, 3 hours and 2 days ago
    strategy = StrategyFactory()
    now = timezone.now()
    for age in (timedelta(minutes=30), timedelta(hours=3), timedelta(days=2)):
        make_execution(strategy, status="success", started_at=now - age)
    # when the overview counts them
    counts = {row.status: row for row in executions_by_status(now=now)}
    # then one in the last hour, two in the day, and every status is listed
    assert (counts["success"].hour, counts["success"].day) == (1, 2)
    assert (counts["failed"].hour, counts["failed"].day) == (0, 0)
    assert list(counts) == list(StrategyExecution.Status.values)
