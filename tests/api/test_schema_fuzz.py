"""Property-based run of every operation in the OpenAPI schema (schemathesis).

Requests go straight to the Django WSGI application, authenticated as a user who owns a bit
of everything, next to another user's objects. Most path ids are replaced by ids of real
objects of both users (the rest stay random), so the fuzzing reaches past the 404s. Every response
must be a non-5xx, declared in the schema for its status code, with a body that matches the
documented schema; schema-violating requests must be rejected.

`positive_data_acceptance` is left out on purpose: a schema cannot say that strategy code must
define generate_signal, that a password is not too common or that one may not subscribe
twice, so some schema-valid requests are rightly answered with a 400.
"""

from __future__ import annotations

import itertools
import os
from decimal import Decimal

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from notifications.models import NotificationEvent
from notifications.services import Notice, notifications_record, webhook_create
from subscriptions.services import subscription_create, subscription_pause
from tests.api.helpers import (
    make_credential,
    make_order,
    make_position,
    make_trade,
    strategy_change_rate,
)
from tests.api.stats import FUZZ
from tests.factories import StrategyFactory, UserFactory, subscribe

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
FUZZ.operations = len(list(schema.get_all_operations()))
# Ids of real objects by kind, filled in by the `world` fixture before each operation runs.
KNOWN_IDS: dict[str, list[int]] = {}


def _kind(path: str) -> str:
    if path.startswith("/api/strategies/subscriptions/"):
        return "subscriptions"
    if path.startswith("/api/webhooks/"):
        return "webhooks"
    return "credentials" if path.startswith("/api/credentials/") else "strategies"


ROTATION = itertools.count()


def _aim_at_real_objects(case) -> None:
    """Point most well-typed ids at real objects of the path's kind (mine or the other
    user's), in every phase; ids a negative case mutated on purpose are left alone."""
    original = (case.path_parameters or {}).get("id")
    # Generated as an int by the fuzzing phase, as its wire form by the coverage phase.
    if not (type(original) is int or (isinstance(original, str) and original.isdigit())):
        return
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH):
        return
    choices = [*KNOWN_IDS.get(_kind(case.operation.path), []), original]
    case.path_parameters = {**case.path_parameters, "id": choices[next(ROTATION) % len(choices)]}


@pytest.fixture
def world(settings, dry_runs_on_worker):
    """Two users with strategies, subscriptions, credentials and trades; returns my token.
    Deploys are dry-run by a real worker."""
    settings.API_AUTH_THROTTLE_RATE = "100000/minute"
    # No exchange is reachable from the fuzzed API by design (generated exchange ids would
    # otherwise be asked about generated keys): new credentials are stored unchecked here;
    # test_credentials.py checks them against the exchange simulator.
    settings.CREDENTIAL_CHECK = False
    strategy_change_rate(settings, "100000/minute")
    me, other = UserFactory(), UserFactory()
    mine = StrategyFactory(owner=me, settings={"fast": 5})
    public_other = StrategyFactory(owner=other, is_public=True)
    private_other = StrategyFactory(owner=other)
    open_to_me = StrategyFactory(owner=other, is_public=True)
    credential = make_credential(me)
    live = subscription_create(
        user=me,
        strategy=mine,
        capital=Decimal("1000"),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=credential,
    )
    paper = subscribe(public_other, user=me, capital="500")
    closed = make_trade(paper, pnl="12.5")
    make_order(closed)
    make_order(closed, purpose=f"exit:{closed.pk}", reduce_only=True)
    make_order(make_trade(paper, status="open", pnl=None), type="limit", price=Decimal("0.05"))
    make_position(paper)
    theirs = subscribe(mine, user=other)
    subscription_pause(subscription=theirs)
    other_credential = make_credential(other, label="theirs")
    # Webhooks of both users, mine with a delivery of a fill.
    my_webhook, _ = webhook_create(user=me, url="https://me.invalid/hook", events=["trade.filled"])
    their_webhook, _ = webhook_create(
        user=other, url="https://other.invalid/hook", events=["trade.filled"]
    )
    fill = Notice(user_id=me.pk, event=NotificationEvent.TRADE_FILLED, key="trade.filled:1")
    notifications_record(notices=[fill])
    KNOWN_IDS.clear()
    KNOWN_IDS.update(
        strategies=[s.pk for s in (mine, public_other, private_other, open_to_me)],
        subscriptions=[s.pk for s in (live, paper, theirs)],
        credentials=[
            credential.pk,
            other_credential.pk,
            make_credential(me, label="spare").pk,
        ],
        webhooks=[my_webhook.pk, their_webhook.pk],
    )
    return Token.objects.create(user=me).key


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,  # nothing written to .hypothesis/ in the checkout
    # The same cases on every run, so a failure in `make test` reproduces; FUZZ_RANDOM=1 to
    # explore new ones.
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_every_operation_conforms_to_the_schema(case, world):
    _aim_at_real_objects(case)
    # Requests carry my token, except the negative cases about the headers (the only
    # declared header is Authorization): a header dropped or malformed on purpose goes as is.
    if not (case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {world}"}
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    FUZZ.record(case.operation.label, response.status_code)
