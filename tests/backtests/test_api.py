"""The backtests API: requesting one, following it on a real worker, reading its result.

Every backtest here runs on real candles (the first few hundred of ETH/BTC 5m from the
market data files) in the sandbox; the happy path goes through a worker consuming the
backtest queue only, as the Procfile's does.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backtests.models import Backtest
from backtests.services import backtest_run
from config.celery_app import app
from tests.api.helpers import client_for, field_errors
from tests.factories import (
    BacktestFactory,
    StrategyFactory,
    UserFactory,
    backtest_of,
    stored_candles,
)
from tests.strategy_code import SMA_CROSSOVER
from tests.workers import WorkerPool, wait_for

pytestmark = pytest.mark.django_db

MARKET = {"exchange": "binance", "symbol": "ETH/BTC", "resolution": "5m"}
CODE_BODY = {"code": SMA_CROSSOVER, **MARKET}
MISSING = 987_654_321
DROP = object()  # a key left out of the body
NOT_FOUND = {"detail": "Not found.", "code": "not_found", "errors": {}}
ENDPOINTS = ("", "/chart.png", "/chart.svg", "/report.html")
# In a source line of the strategy and in what it prints, so a leak of either shows.
SECRET = "proprietary-edge-7f3a"
# Both forms (per close and vectorised) take the same decisions: long on a higher close.
SECRET_CODE = f"""
LOOKBACK = 5

def generate_signal(candles, settings):
    print("{SECRET}")
    close = candles["close"]
    if close.iloc[-1] > close.iloc[-2]:
        return {{"signal": "LONG", "price": float(close.iloc[-1])}}
    return None

def generate_signals(candles, settings):
    print("{SECRET}")
    close = candles["close"]
    up = (close > close.shift(1)).tolist()
    return [{{"signal": "LONG", "price": float(c)}} if u else None for u, c in zip(up, close)]
"""
SECRET_FAILS = f"""
LOOKBACK = 5

def generate_signal(candles, settings):
    raise ValueError("bad luck") # {SECRET}
"""
SUMMARY_FIELDS = {
    "id",
    "status",
    "progress",
    "candles_total",
    "candles_done",
    "error",
    "strategy",
    "code_version",
    "exchange",
    "symbol",
    "resolution",
    "settings",
    "currency",
    "period",
    "sizing",
    "costs",
    "method",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
}
TRADE_FIELDS = {
    "side",
    "quantity",
    "entry_time",
    "entry_price",
    "entry_fee",
    "stop_loss",
    "take_profit",
    "exit_time",
    "exit_price",
    "exit_fee",
    "pnl",
    "exit_reason",
}


@pytest.fixture(scope="session")
def backtest_worker(django_db_setup, django_db_blocker):
    """A real worker consuming only the backtest queue (one process, as deployed)."""
    with django_db_blocker.unblock():
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(django_settings.BACKTEST_QUEUE)
        pool = WorkerPool(count=1, concurrency=1, queues=[django_settings.BACKTEST_QUEUE])
        pool.start()
    yield pool
    pool.stop()


@pytest.fixture
def candles():
    return stored_candles(count=300)


@pytest.fixture
def me():
    return UserFactory()


@pytest.fixture
def them():
    return UserFactory()


@pytest.fixture
def api(me):
    return client_for(me)


@pytest.fixture
def their_api(them):
    return client_for(them)


@pytest.fixture
def anon():
    return APIClient()


def _done(backtest: Backtest) -> Backtest:
    finished = backtest_run(backtest_id=backtest.pk)
    assert finished.status == Backtest.Status.DONE, finished.error
    return finished


# --- the happy path, on a real worker --------------------------------------------------------
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_backtest_runs_on_the_backtest_worker_and_its_result_is_read_back(
    api, me, candles, backtest_worker
):
    # when I ask for a backtest of my code on the stored candles
    body = {**CODE_BODY, "capital": "2", "risk_per_trade": "0.02", "fee_bps": 7.5}
    response = api.post("/api/backtests", body, format="json")

    # then it is accepted, queued, and says where to follow it
    assert response.status_code == 202, response.content
    queued = response.json()
    assert set(queued) == SUMMARY_FIELDS
    assert queued["status"] == "queued" and queued["progress"] == 0
    assert response["Location"].endswith(f"/api/backtests/{queued['id']}")
    assert queued["sizing"] == {
        "capital": "2.00000000",
        "risk_per_trade": "0.02000",
        "leverage": "1.00",
    }
    assert queued["costs"] == {"fee_bps": "7.500", "slippage_bps": "5.000"}
    assert (queued["currency"], queued["strategy"], queued["method"]) == ("BTC", None, "per_candle")

    # and the backtest worker runs it to the end
    def finished():
        answer = api.get(response["Location"]).json()
        return answer if answer["status"] in ("done", "failed") else None

    detail = wait_for(finished, timeout=240, what="the backtest to finish")
    assert detail["status"] == "done", detail["error"]
    # progress counts the traded candles: the period's first 59 only warmed the strategy up
    assert detail["progress"] == 1 and detail["candles_done"] == detail["candles_total"] == 241
    assert detail["code"] == SMA_CROSSOVER and detail["logs"] is not None
    result = detail["result"]
    assert {"net_return_pct", "max_drawdown_pct", "trades", "fees_paid"} <= set(result["metrics"])
    assert result["trades"] and all(set(t) == TRADE_FIELDS for t in result["trades"])
    first = result["trades"][0]
    assert first["side"] == "long" and Decimal(first["quantity"]) > 0
    assert isinstance(first["entry_price"], str) and Decimal(first["entry_fee"]) > 0
    equity = result["equity"]
    assert len(equity["times"]) == len(equity["equity"]) == detail["candles_done"]
    assert Decimal(equity["equity"][-1]) == Decimal(result["metrics"]["final_equity"])
    assert result["gaps"] == [] and result["lookahead"] is None

    # and its figures are served: a PNG, an SVG and a whole HTML page
    url = response["Location"]
    png, svg, report = (
        api.get(f"{url}/chart.png"),
        api.get(f"{url}/chart.svg"),
        api.get(f"{url}/report.html"),
    )
    assert (png.status_code, png["Content-Type"]) == (200, "image/png")
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert (svg.status_code, svg["Content-Type"]) == (200, "image/svg+xml")
    assert b"<svg" in svg.content
    assert (report.status_code, report["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert report.content.decode().startswith("<!DOCTYPE html>")
    assert "sandbox" in report["Content-Security-Policy"]


def test_a_strategy_i_may_see_is_backtested_on_its_market_with_its_settings(
    api, them, candles, django_capture_on_commit_callbacks
):
    # given someone else's public strategy
    strategy = StrategyFactory(owner=them, is_public=True, code=SECRET_CODE, settings={"k": 1})

    # when I ask for a backtest of it
    with django_capture_on_commit_callbacks() as scheduled:
        response = api.post("/api/backtests", {"strategy": strategy.pk}, format="json")

    # then it is queued on the strategy's market, with its settings, and the run is scheduled
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["strategy"], body["code_version"], body["settings"]) == (strategy.pk, 1, {"k": 1})
    assert (body["exchange"], body["symbol"], body["resolution"]) == ("binance", "ETH/BTC", "5m")
    assert len(scheduled) == 1
    assert SECRET not in response.content.decode()


def test_the_period_is_cut_to_candle_boundaries_and_the_stored_candles(api, candles):
    # given a start between two boundaries and an end past the last stored candle
    body = {**CODE_BODY, "start": "2018-01-10T06:02:00+01:00", "end": "2030-01-01T00:00:00Z"}

    response = api.post("/api/backtests", body, format="json")

    assert response.status_code == 202, response.content
    period = response.json()["period"]
    # 06:02 at +01:00 is 05:02 UTC: the first whole candle opens at 05:05
    assert period["start"] == "2018-01-10T05:05:00Z"
    assert period["end"] == "2018-01-11T05:55:00Z"  # the last stored close
    assert period["lookback"] == 60


def test_the_equity_series_can_be_left_out(api, me, candles):
    backtest = _done(backtest_of(owner=me, code=SMA_CROSSOVER))

    full = api.get(f"/api/backtests/{backtest.pk}").json()
    light = api.get(f"/api/backtests/{backtest.pk}?series=false").json()

    assert len(full["result"]["equity"]["times"]) == backtest.candles_done
    assert light["result"]["equity"] is None
    assert light["result"]["trades"] == full["result"]["trades"]
    bad = api.get(f"/api/backtests/{backtest.pk}?series=maybe")
    assert bad.status_code == 400 and field_errors(bad) == {"series": ["Must be true or false."]}


# --- bad requests ----------------------------------------------------------------------------
BAD_BODIES = [
    ({"code": DROP}, "strategy"),
    ({"strategy": 1}, "strategy"),
    ({"code": "def generate_signal(:\n"}, "code"),
    ({"code": "x = 1\n"}, "code"),
    ({"code": 5}, "code"),
    ({"code": ""}, "code"),
    ({"exchange": DROP}, "exchange"),
    ({"exchange": "nope"}, "exchange"),
    ({"symbol": "ETHBTC"}, "symbol"),
    ({"symbol": "LTC/BTC"}, "symbol"),  # no candles stored for it
    ({"resolution": "7m"}, "resolution"),
    ({"resolution": "1h"}, "symbol"),  # no candles stored at that resolution
    ({"settings": [1]}, "settings"),
    ({"settings": "fast"}, "settings"),
    ({"capital": "abc"}, "capital"),
    ({"capital": "NaN"}, "capital"),
    ({"capital": "Infinity"}, "capital"),
    ({"capital": "1e3"}, "capital"),
    ({"capital": True}, "capital"),
    ({"capital": 0}, "capital"),
    ({"capital": "-1"}, "capital"),
    ({"capital": "1" * 40}, "capital"),
    ({"capital": 10**30}, "capital"),
    ({"capital": "1000000000000.01"}, "capital"),
    ({"capital": "1.123456789"}, "capital"),
    ({"risk_per_trade": "0"}, "risk_per_trade"),
    ({"risk_per_trade": "0.5"}, "risk_per_trade"),
    ({"risk_per_trade": [0.01]}, "risk_per_trade"),
    ({"leverage": "0.5"}, "leverage"),
    ({"leverage": 1000}, "leverage"),
    ({"leverage": "x"}, "leverage"),
    ({"fee_bps": -1}, "fee_bps"),
    ({"fee_bps": "1000.001"}, "fee_bps"),
    ({"fee_bps": "1.2345"}, "fee_bps"),
    ({"fee_bps": None}, "fee_bps"),
    ({"slippage_bps": "NaN"}, "slippage_bps"),
    ({"slippage_bps": 1e9}, "slippage_bps"),
    ({"start": "2018-01-10T06:00:00"}, "start"),  # no zone
    ({"start": "yesterday"}, "start"),
    ({"start": 1515564000}, "start"),
    ({"start": "1960-01-01T00:00:00Z"}, "start"),
    ({"start": "9999-12-31T23:59:59Z"}, "start"),
    ({"start": "0001-01-01T00:00:00+14:00"}, "start"),
    ({"end": "2018-01-10T06:00:00"}, "end"),
    ({"start": "2018-01-11T00:00:00Z", "end": "2018-01-10T12:00:00Z"}, "start"),
    ({"start": "2030-01-01T00:00:00Z"}, "start"),  # after the stored candles
    ({"start": "2018-01-10T05:00:00Z", "end": "2018-01-10T05:30:00Z"}, "start"),  # < LOOKBACK
    ({"method": "fast"}, "method"),
    ({"method": None}, "method"),
    ({"foo": 1}, "foo"),
]


@pytest.mark.parametrize(("change", "field"), BAD_BODIES)
def test_a_bad_request_is_a_400_on_the_field_and_records_nothing(
    api, candles, django_capture_on_commit_callbacks, change, field
):
    body = {k: v for k, v in {**CODE_BODY, **change}.items() if v is not DROP}
    with django_capture_on_commit_callbacks() as scheduled:
        response = api.post("/api/backtests", body, format="json")
    assert response.status_code == 400, response.content
    assert field in field_errors(response), field_errors(response)
    assert not Backtest.objects.exists() and scheduled == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "5"}, "strategy"),
        ({"strategy": 0}, "strategy"),
        ({"strategy": 2**63}, "strategy"),
        ({"strategy": MISSING}, "strategy"),
        ({"strategy": "{mine}", "exchange": "binance"}, "exchange"),
        ({"strategy": "{mine}", "settings": {"fast": 3}}, "settings"),
        ({"code": SMA_CROSSOVER, "exchange": "binance"}, "symbol"),
    ],
)
def test_bad_strategy_requests_are_400s_on_the_field(api, me, candles, body, field):
    mine = StrategyFactory(owner=me)
    body = {k: (mine.pk if v == "{mine}" else v) for k, v in body.items()}
    response = api.post("/api/backtests", body, format="json")
    assert response.status_code == 400, response.content
    assert field in field_errors(response)
    assert not Backtest.objects.exists()


@pytest.mark.parametrize("raw", ['{"capital": 1e400}', '{"capital": NaN}', "[1, 2]", "{"])
def test_malformed_json_and_numbers_beyond_range_are_400s(api, candles, raw):
    response = api.generic("POST", "/api/backtests", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"detail", "code", "errors"}


def test_a_period_over_the_candle_cap_is_refused(api, candles, settings):
    settings.BACKTEST_MAX_CANDLES = 100
    response = api.post("/api/backtests", CODE_BODY, format="json")
    assert response.status_code == 400
    assert field_errors(response) == {"end": ["the period has 300 candles; at most 100"]}


def test_backtests_are_throttled_per_user(api, their_api, candles, settings):
    # given a rate of two backtests an hour
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "backtests": "2/hour"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # when I ask for a third one
    answers = [api.post("/api/backtests", CODE_BODY, format="json") for _ in range(3)]
    # then it is refused, and nothing is recorded for it
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["code"] == "throttled" and "Retry-After" in answers[2]
    assert Backtest.objects.count() == 2
    # while reading mine, and someone else's requests, go on
    assert api.get("/api/backtests").status_code == 200
    assert their_api.post("/api/backtests", CODE_BODY, format="json").status_code == 202


# --- not done yet ----------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["queued", "running", "failed"])
@pytest.mark.parametrize("endpoint", ENDPOINTS[1:])
def test_figures_of_a_backtest_that_is_not_done_are_a_409(api, me, status, endpoint):
    backtest = BacktestFactory(owner=me, status=status)
    response = api.get(f"/api/backtests/{backtest.pk}{endpoint}", HTTP_ACCEPT="image/png")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict" and body["errors"] == {}
    assert f"Backtest #{backtest.pk}" in body["detail"] and status in body["detail"]


def test_a_queued_backtest_has_no_result_yet(api, me):
    backtest = BacktestFactory(owner=me)
    body = api.get(f"/api/backtests/{backtest.pk}").json()
    assert (body["status"], body["progress"], body["result"]) == ("queued", 0, None)
    assert body["code"] == backtest.code


# --- isolation -------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_another_users_backtest_is_a_404_on_every_endpoint(api, them, candles, endpoint):
    # given someone else's finished backtest
    theirs = _done(backtest_of(owner=them, code=SMA_CROSSOVER))
    # when I read it, then it is not found, exactly like one that does not exist
    response = api.get(f"/api/backtests/{theirs.pk}{endpoint}")
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    missing = api.get(f"/api/backtests/{MISSING}{endpoint}")
    assert (missing.status_code, missing.json()) == (404, NOT_FOUND)


def test_another_users_private_strategy_cannot_be_backtested(api, them, candles):
    private = StrategyFactory(owner=them, code=SECRET_CODE)
    response = api.post("/api/backtests", {"strategy": private.pk}, format="json")
    missing = api.post("/api/backtests", {"strategy": MISSING}, format="json")
    # the same answer as for a strategy that does not exist
    assert response.status_code == missing.status_code == 400
    assert field_errors(response) == field_errors(missing) == {"strategy": ["unknown strategy"]}
    assert not Backtest.objects.exists()


def test_the_list_holds_only_my_backtests(api, me, them):
    mine = [BacktestFactory(owner=me), BacktestFactory(owner=me, status="done")]
    BacktestFactory(owner=them)
    body = api.get("/api/backtests").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    assert [b["id"] for b in body["results"]] == [b.pk for b in reversed(mine)]
    assert all(set(b) == SUMMARY_FIELDS for b in body["results"])
    assert api.get("/api/backtests?page_size=1&page=2").json()["results"][0]["id"] == mine[0].pk


def test_a_strategys_code_and_what_it_prints_are_never_in_an_answer(api, me, them, candles):
    # given my backtest of someone else's public strategy, run to the end (vectorised: the
    # run that records what the code printed)
    strategy = StrategyFactory(owner=them, is_public=True, code=SECRET_CODE)
    body = {"strategy": strategy.pk, "method": "vectorised"}
    response = api.post("/api/backtests", body, format="json")
    backtest = _done(Backtest.objects.get(pk=response.json()["id"]))
    assert SECRET in backtest.logs  # it did print it

    # when I read it every way there is
    url = f"/api/backtests/{backtest.pk}"
    answers = [response, api.get("/api/backtests"), api.get(url), api.get(f"{url}/report.html")]

    # then neither its code nor its output is in any answer
    assert all(a.status_code in (200, 202) for a in answers)
    assert all(SECRET not in a.content.decode() for a in answers)
    detail = answers[2].json()
    assert (detail["code"], detail["logs"]) == (None, None)
    assert detail["result"]["trades"]


def test_what_my_own_code_prints_is_shown_to_me(api, me, candles):
    body = {**CODE_BODY, "code": SECRET_CODE, "method": "vectorised"}
    response = api.post("/api/backtests", body, format="json")
    backtest = _done(Backtest.objects.get(pk=response.json()["id"]))
    detail = api.get(f"/api/backtests/{backtest.pk}").json()
    assert detail["code"] == SECRET_CODE and SECRET in detail["logs"]


def test_the_traceback_of_a_strategy_that_is_not_mine_is_not_shown(api, me, them, candles):
    # given backtests that failed: of someone else's public strategy, and of my own code
    strategy = StrategyFactory(owner=them, is_public=True, code=SECRET_FAILS)
    theirs = backtest_run(backtest_id=backtest_of(owner=me, strategy=strategy).pk)
    mine = backtest_run(backtest_id=backtest_of(owner=me, code=SECRET_FAILS).pk)
    assert theirs.status == mine.status == "failed" and SECRET in theirs.error

    # then the reason is given for both, the source line only for my own code
    their_error = api.get(f"/api/backtests/{theirs.pk}").json()["error"]
    my_error = api.get(f"/api/backtests/{mine.pk}").json()["error"]
    assert "ValueError: bad luck" in their_error and SECRET not in their_error
    assert "ValueError: bad luck" in my_error and SECRET in my_error


def test_the_api_needs_a_token(anon):
    for endpoint in ENDPOINTS:
        assert anon.get(f"/api/backtests/1{endpoint}").status_code == 401
    assert anon.post("/api/backtests", CODE_BODY, format="json").status_code == 401


# --- the schema ------------------------------------------------------------------------------
def test_the_schema_documents_every_backtest_endpoint(anon):
    schema = anon.get("/api/schema/?format=json").json()
    paths = {p: item for p, item in schema["paths"].items() if p.startswith("/api/backtests")}
    operations = [op for item in paths.values() for op in item.values()]
    assert len(operations) == 6 and all(op["tags"] == ["backtests"] for op in operations)
    assert "202" in paths["/api/backtests"]["post"]["responses"]
    assert "429" in paths["/api/backtests"]["post"]["responses"]
    media = {
        "chart.png": "image/png",
        "chart.svg": "image/svg+xml",
        "report.html": "text/html",
    }
    for name, media_type in media.items():
        responses = paths[f"/api/backtests/{{id}}/{name}"]["get"]["responses"]
        assert list(responses["200"]["content"]) == [media_type]
        assert list(responses["409"]["content"]) == ["application/json"]
    request = schema["components"]["schemas"]["BacktestCreateRequest"]
    assert request["additionalProperties"] is False
    assert set(request["properties"]) == {
        "strategy",
        "code",
        "exchange",
        "symbol",
        "resolution",
        "settings",
        "start",
        "end",
        "capital",
        "risk_per_trade",
        "leverage",
        "fee_bps",
        "slippage_bps",
        "method",
    }


# Committed: the WSGI application closes the connection after each request, as in production.
@pytest.mark.django_db(transaction=True)
def test_every_answer_matches_the_documented_schema(me, candles):
    # given a finished backtest, a failed one and a queued one of mine
    done = _done(backtest_of(owner=me, code=SMA_CROSSOVER))
    failed = backtest_run(backtest_id=backtest_of(owner=me, code=SECRET_FAILS).pk)
    queued = BacktestFactory(owner=me)
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    headers = {"Authorization": f"Bearer {Token.objects.create(user=me).key}"}
    calls = [("/api/backtests", "GET", {}, {}, {})]
    calls += [
        (f"/api/backtests/{{id}}{endpoint}", "GET", {"id": backtest.pk}, query, {})
        for backtest in (done, failed, queued)
        for endpoint in ENDPOINTS
        for query in ([{}, {"series": "false"}] if endpoint == "" else [{}])
    ]
    calls.append(("/api/backtests", "POST", {}, {}, CODE_BODY))
    # when each is read, then status, content type, headers and body are as documented
    for path, method, parameters, query, body in calls:
        payload = {"body": body} if body else {}
        case = schema[path][method].Case(
            path_parameters=parameters, query=query, headers=headers, **payload
        )
        case.call_and_validate(excluded_checks=[positive_data_acceptance])


def test_the_list_never_loads_results(api, me):
    BacktestFactory(owner=me, status="done", series={"times": [1], "equity": ["1"]})
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/backtests").json()["count"] == 1
    selects = [q["sql"] for q in queries if 'FROM "backtests_backtest"' in q["sql"]]
    assert selects and all('"backtests_backtest"."series"' not in sql for sql in selects)
