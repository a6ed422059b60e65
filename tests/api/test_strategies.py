from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.settings import api_settings

from core.events import EventType, event_channel
from core.redis_client import get_redis
from core.time_utils import datetime_to_ms
from execution.services import execution_run
from notifications.models import Notification, NotificationEvent
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from strategies.sandbox import runner
from subscriptions.services import subscription_pause
from tests.api.helpers import (
    VALID_CODE,
    client_for,
    deploy_payload,
    field_errors,
    make_execution,
    make_trade,
    strategy_change_rate,
)
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe
from tests.strategy_code import SCRIPTED
from tests.workers import test_database_url as worker_database_url
from tooling.live_processes import QueueWorker
from tooling.processes import worker_env

STRATEGY_FIELDS = {
    "id",
    "owner",
    "is_owner",
    "name",
    "description",
    "code",
    "code_version",
    "lookback",
    "exchange",
    "symbol",
    "resolution",
    "settings",
    "settings_version",
    "is_public",
    "is_marketplace",
    "status",
    "subscriber_count",
    "created_at",
    "updated_at",
}


# --- deploy ---------------------------------------------------------------------------------
@pytest.mark.worker
@pytest.mark.django_db
def test_deploy_creates_the_strategy_and_its_first_version(api, me, dry_runs_on_worker):
    # when a user deploys a strategy
    response = api.post("/api/strategies/deploy", deploy_payload(is_public=True), format="json")
    # then it answers 201 with the strategy, as stored
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == STRATEGY_FIELDS
    strategy = Strategy.objects.get(pk=body["id"])
    assert strategy.owner == me and body["owner"] == me.username and body["is_owner"] is True
    assert body["code"] == VALID_CODE == strategy.code
    assert (body["exchange"], body["symbol"], body["resolution"]) == ("binance", "ETH/BTC", "5m")
    assert body["settings"] == {"fast": 5} and body["settings_version"] == 1
    assert body["lookback"] == 10  # read from the code's LOOKBACK
    assert body["is_public"] is True and body["status"] == "active"
    assert body["subscriber_count"] == 0
    assert StrategyVersion.objects.filter(strategy=strategy, version=1).exists()


@pytest.mark.worker
@pytest.mark.django_db
def test_deploy_accepts_paper_swaps_and_minimal_payloads(api, dry_runs_on_worker):
    minimal = {
        "name": "m",
        "code": VALID_CODE,
        "exchange": "paper",
        "symbol": "BTC/USDT:USDT",
        "resolution": "1d",
    }
    response = api.post("/api/strategies/deploy", minimal, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["settings"] == {} and body["description"] == "" and body["is_public"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"resolution": "7m"}, "resolution", "not a valid choice"),
        ({"resolution": "5"}, "resolution", "not a valid choice"),
        ({"symbol": "ethbtc"}, "symbol", "ccxt unified symbol"),
        ({"symbol": "ETH-BTC"}, "symbol", "ccxt unified symbol"),
        ({"exchange": "nasdaq"}, "exchange", "Unknown exchange"),
        ({"code": "def generate_signal(candles, settings)\n"}, "code", "syntax error"),
        ({"code": "def other(candles, settings):\n    return None\n"}, "code", "not defined"),
        ({"code": "def generate_signal(candles):\n    return None\n"}, "code", "2 parameters"),
        ({"code": ""}, "code", "blank"),
        ({"name": ""}, "name", "blank"),
        ({"settings": [1, 2]}, "settings", "JSON object"),
        ({"settings": "fast=5"}, "settings", "JSON object"),
        ({"is_public": "yes"}, "is_public", "true or false"),
        ({"is_marketplace": 1}, "is_marketplace", "true or false"),
        ({"name": 42}, "name", "string"),
        ({"owner": 1}, "owner", "Unknown field"),
        ({"subscriber_count": 9}, "subscriber_count", "Unknown field"),
    ],
)
def test_deploy_validation_errors(api, override, field, message):
    response = api.post("/api/strategies/deploy", deploy_payload(**override), format="json")
    assert response.status_code == 400
    errors = field_errors(response)
    assert message in " ".join(errors[field]), errors
    assert not Strategy.objects.exists()


@pytest.mark.django_db
def test_deploy_reports_every_missing_field_at_once(api):
    response = api.post("/api/strategies/deploy", {}, format="json")
    assert response.status_code == 400
    assert set(field_errors(response)) == {"name", "code", "exchange", "symbol", "resolution"}


@pytest.fixture
def misconfigured_sandbox_worker(settings, django_db_blocker):
    """A worker on its own queue whose sandbox refuses to run anything (an isolation mode
    that does not exist), taking this test's dry runs."""
    queue = "strategy-dry-runs-refused-tests"
    with django_db_blocker.unblock():
        env = worker_env(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            DATABASE_URL=worker_database_url(),
            STRATEGY_SANDBOX_ISOLATION="no-such-mode",
        )
        worker = QueueWorker(queue=queue, env=env, log_dir=settings.VAR_DIR / "test-workers")
        try:
            worker.start().wait_ready()
            settings.STRATEGY_DRY_RUN_QUEUE = queue
            settings.STRATEGY_DRY_RUN_WAIT_S = 120.0
            yield worker
        finally:
            worker.stop()


UNAVAILABLE = {
    "detail": "The strategy could not be checked; retry later.",
    "code": "service_unavailable",
    "errors": {},
}


@pytest.mark.worker
# Transactional: the worker's start writes the beat schedule, which an open test transaction
# would hold up (SQLite has one writer).
@pytest.mark.django_db(transaction=True)
def test_deploy_answers_503_when_the_sandbox_cannot_check_the_code(
    api, misconfigured_sandbox_worker
):
    # given a worker whose sandbox cannot run strategies
    # when a valid strategy is deployed
    response = api.post("/api/strategies/deploy", deploy_payload(), format="json")
    # then it is the server's failure, said without its internals, and nothing is stored
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE
    assert not Strategy.objects.exists()


@pytest.mark.django_db
def test_deploy_answers_503_when_no_worker_checks_the_code_in_time(api, settings):
    # given dry runs routed to a queue no worker takes, and a short wait
    settings.STRATEGY_DRY_RUN_QUEUE = "strategy-dry-runs-nobody-takes"
    settings.STRATEGY_DRY_RUN_WAIT_S = 0.5
    try:
        # when a valid strategy is deployed
        response = api.post("/api/strategies/deploy", deploy_payload(), format="json")
    finally:
        _purge_queue(settings.STRATEGY_DRY_RUN_QUEUE)
    # then the answer is a 503 and nothing is stored: a strategy is never active unchecked
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE
    assert not Strategy.objects.exists()


def _purge_queue(queue: str) -> None:
    from config.celery_app import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


@pytest.mark.worker
@pytest.mark.django_db
def test_deploy_dry_runs_the_code_with_the_given_settings(api, dry_runs_on_worker):
    code = "def generate_signal(candles, settings):\n    return {'signal': settings['side']}\n"
    missing = api.post(
        "/api/strategies/deploy", deploy_payload(code=code, settings={}), format="json"
    )
    assert missing.status_code == 400
    assert "KeyError: 'side'" in field_errors(missing)["code"][0]
    ok = api.post(
        "/api/strategies/deploy",
        deploy_payload(code=code, settings={"side": "HOLD"}),
        format="json",
    )
    assert ok.status_code == 201, ok.content


@pytest.mark.worker
@pytest.mark.django_db
def test_a_spinning_strategy_is_refused_at_the_dry_run_cap(api, settings, dry_runs_on_worker):
    # given a strategy that never returns
    spin = "def generate_signal(candles, settings):\n    while True:\n        pass\n"
    # when it is deployed
    response = api.post("/api/strategies/deploy", deploy_payload(code=spin), format="json")
    # then the dry run was stopped at its cap (3 s by default), well below the execution
    # timeout (10 s in tests), and the author is told so on the field
    assert response.status_code == 400
    assert field_errors(response) == {"code": ["dry run failed: timeout after 3.0 s"]}
    assert settings.STRATEGY_TIMEOUT_S / 2 >= 3.0
    assert not Strategy.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db
def test_the_dry_run_runs_on_a_worker_never_in_the_web_process(
    api, dry_runs_on_worker, monkeypatch
):
    # given a web process in which the sandbox refuses to run anything
    def tripwire(*args, **kwargs):
        raise AssertionError("strategy code ran in the web process")

    monkeypatch.setattr(runner, "execute", tripwire)
    failing = "def generate_signal(candles, settings):\n    return 1 / 0\n"
    # when a failing and a valid strategy are deployed
    refused = api.post("/api/strategies/deploy", deploy_payload(code=failing), format="json")
    deployed = api.post("/api/strategies/deploy", deploy_payload(), format="json")
    # then both were dry-run (the failure is the code's own), elsewhere: on the worker
    assert refused.status_code == 400
    assert "ZeroDivisionError" in field_errors(refused)["code"][0]
    assert deployed.status_code == 201, deployed.content


# --- throttling -----------------------------------------------------------------------------
@pytest.mark.worker
@pytest.mark.django_db
def test_thirty_deploys_in_a_row_are_throttled_after_the_rate(api, them, dry_runs_on_worker):
    # given the configured per-user rate of strategy changes (10/minute by default)
    allowed = int(api_settings.DEFAULT_THROTTLE_RATES["strategy_changes"].split("/")[0])
    assert allowed < 30
    # when I deploy 30 strategies in a row
    answers = [
        api.post("/api/strategies/deploy", deploy_payload(name=f"s{i}"), format="json")
        for i in range(30)
    ]
    # then the first ones within the rate are deployed, every later one is a 429
    assert [a.status_code for a in answers] == [201] * allowed + [429] * (30 - allowed)
    refused = answers[-1]
    assert refused.json()["code"] == "throttled" and int(refused["Retry-After"]) > 0
    assert Strategy.objects.count() == allowed
    # and the limit is mine: another user still deploys
    theirs = client_for(them).post("/api/strategies/deploy", deploy_payload(), format="json")
    assert theirs.status_code == 201, theirs.content


@pytest.mark.worker
@pytest.mark.django_db
def test_settings_changes_count_against_the_same_per_user_rate(
    api, me, settings, dry_runs_on_worker
):
    # given a rate of 3 changes a minute and my strategy
    strategy_change_rate(settings, "3/minute")
    strategy = StrategyFactory(owner=me, settings={"fast": 0})
    url = f"/api/strategies/{strategy.pk}/settings"
    # when I change its settings four times in a row
    answers = [api.put(url, {"settings": {"fast": i}}, format="json") for i in range(1, 5)]
    # then the fourth change is refused and changes nothing
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    strategy.refresh_from_db()
    assert strategy.settings == {"fast": 3} and strategy.settings_version == 4
    # and a deploy now is over the same rate, refused before any dry run
    deploy = api.post("/api/strategies/deploy", deploy_payload(), format="json")
    assert deploy.status_code == 429 and not Strategy.objects.exclude(pk=strategy.pk).exists()


# --- list and detail ------------------------------------------------------------------------
@pytest.fixture
def catalogue(me, them):
    """Mine (private and public), theirs public, theirs private."""
    return {
        "mine_private": StrategyFactory(owner=me, name="alpha", resolution="5m"),
        "mine_public": StrategyFactory(owner=me, name="beta", is_public=True, resolution="1h"),
        "their_public": StrategyFactory(
            owner=them, name="gamma", is_public=True, is_marketplace=True, exchange="kraken"
        ),
        "their_private": StrategyFactory(owner=them, name="delta"),
    }


def _names(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {item["name"] for item in response.json()["results"]}


@pytest.mark.django_db
def test_list_shows_mine_and_public_ones_never_anothers_code(api, catalogue):
    response = api.get("/api/strategies")
    assert _names(response) == {"alpha", "beta", "gamma"}
    by_name = {item["name"]: item for item in response.json()["results"]}
    assert by_name["alpha"]["code"] == catalogue["mine_private"].code
    assert by_name["gamma"]["code"] is None and by_name["gamma"]["is_owner"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("mine=true", {"alpha", "beta"}),
        ("mine=false", {"gamma"}),
        ("is_public=true", {"beta", "gamma"}),
        ("is_marketplace=true", {"gamma"}),
        ("exchange=kraken", {"gamma"}),
        ("resolution=1h", {"beta"}),
        ("search=ALP", {"alpha"}),
        ("status=retired", set()),
        ("symbol=ETH/BTC", {"alpha", "beta", "gamma"}),
    ],
)
def test_list_filters(api, catalogue, query, names):
    assert _names(api.get(f"/api/strategies?{query}")) == names


@pytest.mark.django_db
def test_list_orders_and_paginates(api, catalogue):
    ordered = api.get("/api/strategies?ordering=name").json()["results"]
    assert [item["name"] for item in ordered] == ["alpha", "beta", "gamma"]
    page = api.get("/api/strategies?ordering=-name&page_size=2&page=2").json()
    assert page["count"] == 3 and [item["name"] for item in page["results"]] == ["alpha"]


@pytest.mark.django_db
def test_detail_shows_code_to_the_owner_only(api, catalogue):
    mine = api.get(f"/api/strategies/{catalogue['mine_private'].pk}")
    theirs = api.get(f"/api/strategies/{catalogue['their_public'].pk}")
    hidden = api.get(f"/api/strategies/{catalogue['their_private'].pk}")
    assert mine.status_code == 200 and mine.json()["code"] == catalogue["mine_private"].code
    assert theirs.status_code == 200 and theirs.json()["code"] is None
    assert hidden.status_code == 404


# --- settings -------------------------------------------------------------------------------
@pytest.mark.worker
@pytest.mark.django_db
def test_settings_are_replaced_versioned_and_published(
    api, me, django_capture_on_commit_callbacks, dry_runs_on_worker
):
    # given my strategy and a listener on the settings channel
    strategy = StrategyFactory(owner=me, settings={"fast": 5, "slow": 20})
    pubsub = get_redis().pubsub()
    pubsub.subscribe(event_channel(EventType.STRATEGY_SETTINGS_CHANGED))
    pubsub.get_message(timeout=1)
    try:
        # when I replace the settings
        with django_capture_on_commit_callbacks(execute=True):
            response = api.put(
                f"/api/strategies/{strategy.pk}/settings", {"settings": {"fast": 8}}, format="json"
            )
        message = pubsub.get_message(timeout=2)
    finally:
        pubsub.close()
    # then they are replaced as a whole, their version bumped, the change published
    assert response.status_code == 200, response.content
    assert response.json()["settings"] == {"fast": 8}
    assert response.json()["settings_version"] == 2
    strategy.refresh_from_db()
    assert strategy.settings == {"fast": 8} and strategy.settings_version == 2
    event = json.loads(message["data"])
    assert event["type"] == "strategy.settings.changed"
    assert event["payload"] == {"strategy_id": strategy.pk, "settings_version": 2}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "settings"),
        ({"settings": [1]}, "settings"),
        ({"settings": None}, "settings"),
        ({"settings": {}, "name": "x"}, "name"),
    ],
)
def test_settings_validation_errors_change_nothing(api, me, body, field):
    strategy = StrategyFactory(owner=me, settings={"fast": 5})
    response = api.put(f"/api/strategies/{strategy.pk}/settings", body, format="json")
    assert response.status_code == 400 and field in field_errors(response)
    strategy.refresh_from_db()
    assert strategy.settings == {"fast": 5} and strategy.settings_version == 1


START = datetime(2018, 1, 10, 5, 0, tzinfo=UTC)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_next_execution_runs_with_the_new_settings_and_records_their_version(
    me, dry_runs_on_worker
):
    # given my scripted strategy (its settings decide the signal), with a subscriber
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=20))
    strategy = StrategyFactory(owner=me, code=SCRIPTED, settings={"signal": "HOLD"})
    subscribe(strategy)
    # when I change its settings through the API and the next candle closes
    response = client_for(me).put(
        f"/api/strategies/{strategy.pk}/settings", {"settings": {"signal": "LONG"}}, format="json"
    )
    assert response.status_code == 200
    outcome = execution_run(
        strategy_id=strategy.pk,
        interval_start=START + timedelta(minutes=20),
        trigger="replay",
        inline_fanout=True,
    )
    # then that execution used the new settings and recorded their version
    execution = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert execution.settings_version == 2
    assert execution.status == "success" and execution.signal["signal"] == "LONG"


# --- code changes and refused changes -------------------------------------------------------
V2 = """LOOKBACK = 7

def generate_signal(candles, settings):
    print("v2")
    return {"signal": "LONG", "price": float(candles["close"].iloc[-1])}
"""


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_new_code_is_a_new_version_that_the_next_execution_runs(me, dry_runs_on_worker):
    # given my scripted strategy (version 1 holds), with a subscriber and a market
    load_candles(rows=flat_candles(start_ms=datetime_to_ms(START), count=20))
    strategy = StrategyFactory(owner=me, code=SCRIPTED, settings={"signal": "HOLD"})
    subscribe(strategy)
    url = f"/api/strategies/{strategy.pk}/code"

    # when I replace its code (it goes long, on 7 candles), then send the same code again
    response = client_for(me).put(url, {"code": V2}, format="json")
    again = client_for(me).put(url, {"code": V2}, format="json")
    outcome = execution_run(
        strategy_id=strategy.pk,
        interval_start=START + timedelta(minutes=50),
        trigger="replay",
        inline_fanout=True,
    )

    # then it is stored as version 2 (once), with the LOOKBACK it declares
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["code"], body["code_version"], body["lookback"]) == (V2, 2, 7)
    assert again.status_code == 200 and again.json()["code_version"] == 2
    versions = StrategyVersion.objects.filter(strategy=strategy).order_by("version")
    assert [(v.version, v.code) for v in versions] == [(1, SCRIPTED), (2, V2)]
    # and the next execution ran it, recorded its version, and its signal reached the fan-out
    execution = StrategyExecution.objects.get(pk=outcome.execution_id)
    assert (execution.code_version, execution.logs, execution.candles_used) == (2, "v2\n", 7)
    assert execution.status == "success" and execution.signal["signal"] == "LONG"
    assert execution.trades_generated == 1


RSI = """LOOKBACK = 20


def generate_signal(candles, settings):
    close = candles["close"]
    if len(close) < 2:
        return None
    window = settings.get("rsi_window", 14) + 1
    print(close.iloc[-window:].mean())
    return None
"""
SYNTAX_ERROR = "def generate_signal(candles, settings)\n    return None\n"
RUNTIME_ERROR = "def generate_signal(candles, settings):\n    ratio = 1\n    return ratio / 0\n"


@pytest.mark.worker
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("endpoint", "body", "message", "line"),
    [
        ("code", {"code": SYNTAX_ERROR}, "syntax error: expected ':' (line 1)", 1),
        ("code", {"code": RUNTIME_ERROR}, "ZeroDivisionError: division by zero (line 3)", 3),
        ("settings", {"settings": {"rsi_window": "ten"}}, "TypeError: can only", 8),
    ],
)
def test_a_refused_change_changes_nothing_and_tells_the_author(
    api, me, them, dry_runs_on_worker, endpoint, body, message, line
):
    # given my strategy, with its code and settings as deployed
    strategy = StrategyFactory(owner=me, code=RSI, lookback=20, settings={"rsi_window": 14})
    before = Strategy.objects.values().get(pk=strategy.pk)

    # when I change its code or settings to something its dry run refuses
    response = api.put(f"/api/strategies/{strategy.pk}/{endpoint}", body, format="json")

    # then the answer is a 400 on that field, with the error and its line
    assert response.status_code == 400, response.content
    error = field_errors(response)[endpoint][0]
    assert message in error and f"(line {line})" in error.split("\n")[0], error
    # and nothing changed: no new version, the same code and settings
    assert Strategy.objects.values().get(pk=strategy.pk) == before
    assert StrategyVersion.objects.filter(strategy=strategy).count() == 1
    # and I, the author, was notified of it (nobody else), with the error and the line
    notice = Notification.objects.get()
    assert (notice.user, notice.event) == (me, NotificationEvent.CHANGE_REFUSED)
    assert notice.payload == {
        "strategy_id": strategy.pk,
        "strategy_name": strategy.name,
        "change": endpoint,
        "error": error,
        "line": line,
        "code_version": 1,
        "settings_version": 1,
    }
    # and the same refused change sent again is the same notification, not a second one
    assert (
        api.put(f"/api/strategies/{strategy.pk}/{endpoint}", body, format="json").status_code == 400
    )
    assert Notification.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_a_strategy_changes_through_its_code_and_settings_only(api, me, method):
    # given my strategy
    strategy = StrategyFactory(owner=me)
    # when I try to change or delete it as a whole
    response = getattr(api, method)(f"/api/strategies/{strategy.pk}", {"name": "x"}, format="json")
    # then the answer says what the resource allows (code: PUT .../code, settings: PUT
    # .../settings; retiring is for operators), and nothing changed
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed" and "GET" in response["Allow"]
    detail = response.json()["detail"]
    assert f"PUT /api/strategies/{strategy.pk}/code" in detail
    assert f"PUT /api/strategies/{strategy.pk}/settings" in detail
    assert Strategy.objects.get(pk=strategy.pk).name == strategy.name


# --- stats and executions -------------------------------------------------------------------
@pytest.mark.django_db
def test_stats_aggregate_executions_subscribers_and_pnl(api, me):
    # given executions of every kind, two subscribers (one paused) with realized PnL
    strategy = StrategyFactory(owner=me)
    for drift, duration in [(100.0, 400.0), (200.0, 600.0), (300.0, 800.0), (400.0, 1000.0)]:
        make_execution(strategy, drift_ms=drift, duration_ms=duration, trades_generated=2)
    make_execution(strategy, status="failed", error="boom", drift_ms=None, duration_ms=None)
    make_execution(strategy, status="no_signal", signal=None, drift_ms=None, duration_ms=None)
    first, second = subscribe(strategy), subscribe(strategy)
    subscription_pause(subscription=second)
    make_trade(first)
    type(first).objects.filter(pk=first.pk).update(realized_pnl="12.5", fees_paid="0.5")
    type(second).objects.filter(pk=second.pk).update(realized_pnl="-2.5", fees_paid="0.25")
    # when the owner asks for the stats
    response = api.get(f"/api/strategies/{strategy.pk}/stats")
    # then every figure is there
    assert response.status_code == 200, response.content
    stats = response.json()
    assert stats["executions_total"] == 7  # 6 above and the one make_trade made
    assert stats["executions_by_status"] == {
        "running": 0,
        "success": 5,
        "no_signal": 1,
        "failed": 1,
        "skipped": 0,
    }
    assert stats["average_duration_ms"] == pytest.approx((400 + 600 + 800 + 1000 + 850) / 5)
    assert stats["drift_p50_ms"] == pytest.approx(300.0)
    assert stats["drift_p95_ms"] == pytest.approx(880.0)  # 400 + 0.8 * (1000 - 400)
    assert stats["drift_p99_ms"] == pytest.approx(976.0)  # 400 + 0.96 * (1000 - 400)
    assert stats["drift_sample_size"] == 5
    assert (stats["active_subscribers"], stats["paused_subscribers"]) == (1, 1)
    assert stats["trades_generated"] == 8
    assert Decimal(stats["subscribers_realized_pnl"]) == Decimal("10")
    assert Decimal(stats["subscribers_fees"]) == Decimal("0.75")
    # in return terms too, over both capitals (1000 each), in the market's quote currency
    assert Decimal(stats["subscribers_realized_return_pct"]) == Decimal("0.5")
    assert stats["currency"] == "BTC"


@pytest.mark.django_db
def test_drift_percentiles_count_real_time_executions_only(api, me):
    # given beat, stream and backfill executions, and a manual run and a replay years late
    strategy = StrategyFactory(owner=me)
    for trigger, drift in [("beat", 100.0), ("stream", 200.0), ("backfill", 300.0)]:
        make_execution(strategy, trigger=trigger, drift_ms=drift)
    for trigger in ("manual", "replay"):
        make_execution(strategy, trigger=trigger, drift_ms=279_756_373_053.0)

    # when the stats are read
    stats = api.get(f"/api/strategies/{strategy.pk}/stats").json()

    # then the late runs of past candles are not in the figures
    assert stats["drift_sample_size"] == 3
    assert stats["drift_p50_ms"] == pytest.approx(200.0)
    assert stats["drift_p99_ms"] == pytest.approx(298.0)


@pytest.mark.django_db
def test_stats_of_a_strategy_without_history(api, me):
    strategy = StrategyFactory(owner=me)
    stats = api.get(f"/api/strategies/{strategy.pk}/stats").json()
    assert stats["executions_total"] == 0 and stats["average_duration_ms"] is None
    assert stats["drift_p50_ms"] is None and stats["subscribers_realized_pnl"] == "0.00000000"


@pytest.mark.django_db
def test_executions_are_the_owners_paginated_history(api, me):
    strategy = StrategyFactory(owner=me)
    ok = make_execution(strategy)
    failed = make_execution(strategy, status="failed", error="ZeroDivisionError: x", signal=None)
    response = api.get(f"/api/strategies/{strategy.pk}/executions?page_size=1")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    latest = body["results"][0]
    assert latest["id"] == failed.pk  # newest candle first
    assert latest["status"] == "failed" and latest["error"] == "ZeroDivisionError: x"
    assert latest["signal"] is None
    older = api.get(f"/api/strategies/{strategy.pk}/executions?page=2&page_size=1").json()
    assert older["results"][0]["signal"] == ok.signal


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("status=failed", 1),
        ("status=success", 1),
        ("interval_start_after=2024-01-01T00:05:00Z", 1),
        ("interval_start_before=2024-01-01T00:05:00Z", 1),
        ("ordering=-duration_ms", 2),
    ],
)
def test_executions_filters(api, me, query, count):
    strategy = StrategyFactory(owner=me)
    make_execution(strategy)
    make_execution(strategy, status="failed", error="x")
    response = api.get(f"/api/strategies/{strategy.pk}/executions?{query}")
    assert response.status_code == 200 and response.json()["count"] == count


@pytest.mark.django_db
def test_executions_bad_filters_are_400(api, me):
    strategy = StrategyFactory(owner=me)
    for query in (
        "status=exploded",
        "interval_start_after=yesterday",
        "ordering=logs",
        "interval_start_after=9999-12-31T23:59:59-23:00",  # past year 9999 once in UTC
    ):
        response = api.get(f"/api/strategies/{strategy.pk}/executions?{query}")
        assert response.status_code == 400, query


@pytest.mark.django_db
def test_execution_filters_take_any_utc_offset(api, me):
    # 00:05 UTC written with an offset no real time zone has
    strategy = StrategyFactory(owner=me)
    make_execution(strategy)
    make_execution(strategy)
    url = f"/api/strategies/{strategy.pk}/executions"
    response = api.get(url, {"interval_start_after": "2024-01-01T20:37:00+20:32"})
    assert response.status_code == 200 and response.json()["count"] == 1
