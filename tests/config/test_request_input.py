"""Request input PostgreSQL cannot store (NUL, lone surrogates) is refused before the database.

On PostgreSQL a NUL in a query parameter raises in the driver and a lone surrogate cannot be
encoded at all; SQLite takes both. These tests are what keeps the answer a 4xx on both.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIRequestFactory

from config.authentication import BearerTokenAuthentication
from strategies.models import Strategy
from tests.api.helpers import client_for, deploy_payload
from tests.factories import UserFactory

ERROR_KEYS = {"detail", "code", "errors"}
# Token-shaped, with a NUL where a character would be.
NUL_KEY = "0" * 20 + "\x00" + "0" * 19


def _deploy(**override: Any) -> dict[str, Any]:
    return {
        "method": "post",
        "path": "/api/strategies/deploy",
        "data": json.dumps(deploy_payload(**override)),
        "content_type": "application/json",
    }


# (who asks, the request, the answer's status, the field named in `errors` or None)
CASES = [
    pytest.param(
        "anon",
        {"path": "/api/strategies", "HTTP_AUTHORIZATION": f"Bearer {NUL_KEY}"},
        401,
        None,
        id="header-authorization-bearer",
    ),
    pytest.param(
        "anon",
        {"path": "/api/strategies", "HTTP_AUTHORIZATION": f"Token {NUL_KEY}"},
        401,
        None,
        id="header-authorization-token",
    ),
    pytest.param(
        "user", {"path": "/api/strategies", "HTTP_X_REQUEST_ID": "a\x00b"}, 400, None, id="header"
    ),
    pytest.param("admin", {"path": "/admin/", "cookie": "x" * 32 + "\x00"}, 400, None, id="cookie"),
    pytest.param("user", {"path": "/api/strategies?search=a%00b"}, 400, "search", id="query-api"),
    pytest.param(
        "user",
        {"path": "/api/strategies/subscriptions?status=%00"},
        400,
        "status",
        id="query-api-choice",
    ),
    pytest.param(
        "admin", {"path": "/admin/strategies/strategy/?q=a%00b"}, 400, None, id="query-admin-search"
    ),
    pytest.param(
        "admin",
        {"path": "/admin/strategies/strategy/?exchange=%00"},
        400,
        None,
        id="query-admin-filter",
    ),
    pytest.param(
        "admin",
        {"path": "/admin/authtoken/tokenproxy/a%00b/change/"},
        400,
        None,
        id="path-admin",
    ),
    pytest.param("user", {"path": "/api/strategies/1%00"}, 400, None, id="path-api"),
    pytest.param("user", _deploy(name="bad\x00name"), 400, "name", id="body-string"),
    pytest.param(
        "user", _deploy(settings={"a": ["ok", "nul\x00"]}), 400, "settings", id="body-json"
    ),
    pytest.param("user", _deploy(settings={"\ud800": 1}), 400, "settings", id="body-json-key"),
    pytest.param("user", _deploy(description="\udfff"), 400, "description", id="body-surrogate"),
    pytest.param(
        "anon",
        {
            "method": "post",
            "path": "/api/auth/token",
            "data": json.dumps({"username": "a\x00", "password": "x"}),
            "content_type": "application/json",
        },
        400,
        "username",
        id="body-login",
    ),
    pytest.param(
        "admin",
        {"method": "post", "path": "/admin/login/", "data": {"username": "a\x00", "password": "x"}},
        400,
        None,
        id="body-form",
    ),
]


def _client(who: str, admin_user: Any) -> Client:
    if who == "user":
        return client_for(UserFactory())
    client = Client()
    if who == "admin":
        client.force_login(admin_user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("who", "request_", "status", "field"), CASES)
def test_input_the_database_cannot_store_is_refused_before_it(
    admin_user, who, request_, status, field
):
    # given a client and a request carrying a NUL or a lone surrogate somewhere
    client = _client(who, admin_user)
    request_ = dict(request_)
    if "cookie" in request_:
        client.cookies[settings.SESSION_COOKIE_NAME] = request_.pop("cookie")
    method = request_.pop("method", "get")
    path = request_.pop("path")
    # when it is sent
    response = client.generic(method.upper(), path, **_body(request_), **request_)
    # then it is a client error, in the API's error format under /api/, and nothing was stored
    assert response.status_code == status, response.content[:500]
    if path.startswith("/api/"):
        body = response.json()
        assert set(body) == ERROR_KEYS
        if field:
            assert field in body["errors"], body
    assert not Strategy.objects.exists()


def _body(request_: dict[str, Any]) -> dict[str, Any]:
    """Pop the body out of a case: JSON as it is, form fields urlencoded as a browser would."""
    data = request_.pop("data", None)
    content_type = request_.pop("content_type", None)
    if data is None:
        return {}
    if content_type is None:
        return {"data": urlencode(data), "content_type": "application/x-www-form-urlencoded"}
    return {"data": data, "content_type": content_type}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key", [NUL_KEY, "0" * 39 + "\udfff", "é" * 40, "0" * 41, "0" * 20 + "\t" + "0" * 19]
)
def test_the_token_authentication_refuses_keys_no_token_has_without_a_query(
    django_assert_num_queries, key
):
    # given a request whose Authorization header holds something no token key looks like
    request = APIRequestFactory().get("/api/strategies", HTTP_AUTHORIZATION=f"Bearer {key}")
    # when the authentication class reads it, then it is refused without asking the database
    with django_assert_num_queries(0), pytest.raises(Exception) as refused:
        BearerTokenAuthentication().authenticate(request)
    assert getattr(refused.value, "status_code", None) == 401


@pytest.mark.django_db
def test_the_token_authentication_still_takes_a_real_token():
    # given a user's token
    token = Token.objects.create(user=UserFactory())
    request = APIRequestFactory().get("/api/strategies", HTTP_AUTHORIZATION=f"Token {token.key}")
    # when the authentication class reads it, then it names the user
    user, found = BearerTokenAuthentication().authenticate(request)
    assert (user, found) == (token.user, token)
