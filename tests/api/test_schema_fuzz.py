"""Property-based run of every operation in the OpenAPI schema (schemathesis).

Requests go straight to the Django WSGI application, authenticated as a user who owns a bit
of everything, next to another user's objects. Path ids are drawn from real objects of both
users as well as from random integers, so the fuzzing reaches past the 404s. Every response
must be a non-5xx, declared in the schema for its status code, with a body that matches the
documented schema; schema-violating requests must be rejected.

`positive_data_acceptance` is left out on purpose: a schema cannot say that strategy code must
define generate_signal, that a password is not too common or that one may not subscribe
twice, so some schema-valid requests are rightly answered with a 400.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from subscriptions.services import subscription_create, subscription_pause
from tests.api.helpers import make_credential, make_trade
from tests.api.stats import FUZZ
from tests.factories import StrategyFactory, UserFactory, subscribe

MAX_EXAMPLES = 30

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
FUZZ.operations = len(list(schema.get_all_operations()))
KNOWN_IDS: list[int] = []


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    # Half of the cases aim at objects that exist (mine or the other user's).
    original = (path_parameters or {}).get("id")
    # Only well-typed ids are swapped: a mutated one (negative case) must stay invalid.
    if type(original) is not int or not KNOWN_IDS:
        return st.just(path_parameters)
    real = st.sampled_from(KNOWN_IDS).map(lambda pk: {**path_parameters, "id": pk})
    return st.one_of(st.just(path_parameters), real)


@pytest.fixture
def world(settings):
    """Two users with strategies, subscriptions, credentials and trades; returns my token."""
    settings.API_AUTH_THROTTLE_RATE = "100000/minute"
    me, other = UserFactory(), UserFactory()
    mine = StrategyFactory(owner=me, settings={"fast": 5})
    public_other = StrategyFactory(owner=other, is_public=True)
    private_other = StrategyFactory(owner=other)
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
    make_trade(paper, pnl="12.5")
    make_trade(paper, status="open", pnl=None)
    theirs = subscribe(mine, user=other)
    subscription_pause(subscription=theirs)
    other_credential = make_credential(other, label="theirs")
    KNOWN_IDS[:] = sorted(
        {
            *(s.pk for s in (mine, public_other, private_other)),
            *(s.pk for s in (live, paper, theirs)),
            credential.pk,
            other_credential.pk,
            make_credential(me, label="spare").pk,
        }
    )
    return Token.objects.create(user=me).key


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db(transaction=True)
def test_every_operation_conforms_to_the_schema(case, world):
    # Requests carry my token, except the negative cases about the headers (the only
    # declared header is Authorization): a header dropped or malformed on purpose goes as is.
    if not (case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {world}"}
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    FUZZ.record(case.operation.label, response.status_code)
