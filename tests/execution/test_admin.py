"""Executions and candles in the admin: readable, never editable."""

from __future__ import annotations

import pytest

from markets.models import Candle
from strategies.models import StrategyExecution
from tests.api.helpers import admin_url, make_execution
from tests.factories import StrategyFactory, flat_candles, load_candles


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
