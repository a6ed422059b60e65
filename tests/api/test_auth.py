from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.settings import api_settings
from rest_framework.test import APIRequestFactory

from config.accounts import email_lock_key
from core.locks import lock_acquire
from tests.api.helpers import client_for, field_errors
from tests.factories import UserFactory

User = get_user_model()
PASSWORD = "correct-horse-battery"

# Every endpoint but the two auth ones, with an id where the path has one.
PROTECTED = [
    ("get", "/api/strategies"),
    ("post", "/api/strategies/deploy"),
    ("get", "/api/strategies/1"),
    ("put", "/api/strategies/1/settings"),
    ("put", "/api/strategies/1/code"),
    ("get", "/api/strategies/1/stats"),
    ("get", "/api/strategies/1/executions"),
    ("post", "/api/strategies/1/subscribe"),
    ("get", "/api/strategies/subscriptions"),
    ("get", "/api/strategies/subscriptions/1"),
    ("put", "/api/strategies/subscriptions/1"),
    ("delete", "/api/strategies/subscriptions/1"),
    ("post", "/api/strategies/subscriptions/1/pause"),
    ("post", "/api/strategies/subscriptions/1/resume"),
    ("get", "/api/strategies/subscriptions/1/stats"),
    ("get", "/api/strategies/subscriptions/1/trades"),
    ("get", "/api/credentials"),
    ("post", "/api/credentials"),
    ("delete", "/api/credentials/1"),
]


def account(username: str, **fields):
    """A user whose password is saved (the factory does not save post-generation changes)."""
    user = UserFactory(username=username, **fields)
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.mark.django_db
def test_register_creates_an_account_without_echoing_the_password(anon):
    # when someone signs up
    response = anon.post(
        "/api/auth/register",
        {"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        format="json",
    )
    # then the account exists with a hashed password, and the answer holds no password
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "username", "email"}
    user = User.objects.get(username="alice")
    assert body["id"] == user.pk and user.email == "alice@example.com"
    assert user.check_password(PASSWORD) and user.password != PASSWORD
    assert PASSWORD not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "bob", "password": PASSWORD}, "email"),
        ({"username": "bob", "email": "a@example.com"}, "password"),
        ({"username": "bob", "email": "not-an-email", "password": PASSWORD}, "email"),
        ({"username": "bob smith", "email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "bob", "email": "a@example.com", "password": "password"}, "password"),
        ({"username": "bob", "email": "a@example.com", "password": "48291730"}, "password"),
        ({"username": "bob", "email": "a@example.com", "password": "x7#"}, "password"),
        ({"username": "bob", "email": "a@example.com", "password": "a@example.com1"}, "password"),
        ({"username": 12, "email": "a@example.com", "password": PASSWORD}, "username"),
        ({"username": "bob", "email": "a@example.com", "password": PASSWORD, "admin": 1}, "admin"),
    ],
)
def test_register_validation_errors(anon, payload, field):
    response = anon.post("/api/auth/register", payload, format="json")
    assert response.status_code == 400
    assert field in field_errors(response)
    assert not User.objects.filter(username="bob").exists()


@pytest.mark.django_db
def test_register_refuses_a_taken_username_whatever_its_case(anon):
    UserFactory(username="Alice")
    response = anon.post(
        "/api/auth/register",
        {"username": "alice", "email": "a@example.com", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 400
    assert "taken" in field_errors(response)["username"][0]
    assert User.objects.filter(username__iexact="alice").count() == 1


@pytest.mark.django_db
def test_register_refuses_a_taken_email_whatever_its_case(anon):
    # given an account with Foo@X.com, and a sign-up with new@x.com under way
    UserFactory(username="foo", email="Foo@X.com")
    assert lock_acquire(key=email_lock_key("new@x.com"), ttl_s=30)

    # when others sign up with foo@x.com and NEW@X.com
    def sign_up(username: str, email: str):
        payload = {"username": username, "email": email, "password": PASSWORD}
        return anon.post("/api/auth/register", payload, format="json")

    taken, racing = sign_up("bar", "foo@x.com"), sign_up("baz", "NEW@X.com")

    # then both are a 400 on the email, and neither account exists
    assert taken.status_code == racing.status_code == 400
    assert field_errors(taken) == {"email": ["This email is already registered."]}
    assert field_errors(racing) == {"email": ["This email is being registered right now."]}
    assert list(User.objects.values_list("username", flat=True)) == ["foo"]


@pytest.mark.django_db
def test_token_is_issued_for_good_credentials_and_stays_the_same(anon):
    # given an account
    user = account("carol")
    # when its owner asks for a token twice
    first = anon.post("/api/auth/token", {"username": "carol", "password": PASSWORD}, format="json")
    second = anon.post(
        "/api/auth/token", {"username": "carol", "password": PASSWORD}, format="json"
    )
    # then both answers carry the user's one token
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"token": Token.objects.get(user=user).key}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {"username": "carol", "password": "wrong-password"},
        {"username": "nobody", "password": PASSWORD},
    ],
)
def test_token_refuses_bad_credentials_alike(anon, payload):
    account("carol")
    response = anon.post("/api/auth/token", payload, format="json")
    # the same answer whether the user exists or not
    assert response.status_code == 400
    assert field_errors(response) == {
        "non_field_errors": ["Unable to log in with the provided credentials."]
    }
    assert not Token.objects.exists()


@pytest.mark.django_db
def test_token_refuses_an_inactive_user_and_bad_input(anon):
    account("dave", is_active=False)
    inactive = anon.post(
        "/api/auth/token", {"username": "dave", "password": PASSWORD}, format="json"
    )
    assert inactive.status_code == 400
    missing = anon.post("/api/auth/token", {"username": "dave"}, format="json")
    assert missing.status_code == 400 and "password" in field_errors(missing)


@pytest.mark.django_db
@pytest.mark.parametrize("keyword", ["Bearer", "Token", "bearer"])
def test_both_documented_keywords_authenticate(keyword):
    client = client_for(UserFactory(), keyword=keyword)
    assert client.get("/api/strategies").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "header", [None, "Bearer not-a-real-token", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a b"]
)
def test_every_other_endpoint_requires_a_valid_token(anon, method, path, header):
    if header:
        anon.credentials(HTTP_AUTHORIZATION=header)
    response = getattr(anon, method)(path, {}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"detail", "code", "errors"} and body["errors"] == {}


@pytest.mark.django_db
def test_auth_endpoints_are_throttled_per_client(anon, settings):
    # given a limit of 3 requests a minute
    settings.API_AUTH_THROTTLE_RATE = "3/minute"
    bad = {"username": "x", "password": "y"}
    # when a client keeps guessing passwords
    answers = [anon.post("/api/auth/token", bad, format="json") for _ in range(4)]
    # then the 4th request is refused with a 429 and a Retry-After, in the common format
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert int(answers[-1]["Retry-After"]) > 0
    assert answers[-1].json()["code"] == "throttled"
    # and sign-ups share the same budget
    signup = anon.post("/api/auth/register", {}, format="json")
    assert signup.status_code == 429


@pytest.mark.django_db
def test_throttling_does_not_touch_authenticated_endpoints(settings):
    settings.API_AUTH_THROTTLE_RATE = "1/minute"
    client = client_for(UserFactory())
    assert all(client.get("/api/strategies").status_code == 200 for _ in range(5))


@pytest.mark.django_db
def test_a_rotating_x_forwarded_for_does_not_escape_the_throttle(anon, settings):
    # given a client that used up its budget of 3 password guesses a minute
    settings.API_AUTH_THROTTLE_RATE = "3/minute"
    bad = {"username": "x", "password": "y"}
    assert [anon.post("/api/auth/token", bad, format="json").status_code for _ in range(4)] == [
        400,
        400,
        400,
        429,
    ]
    # when it keeps guessing with a different X-Forwarded-For each time (no proxy is trusted)
    answers = [
        anon.post("/api/auth/token", bad, format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
        for n in range(15)
    ]
    # then every guess is still refused
    assert [a.status_code for a in answers] == [429] * 15


@pytest.mark.django_db
def test_behind_trusted_proxies_the_client_is_the_address_the_nearest_proxy_saw(anon, settings):
    # given one trusted proxy, which appends the address it saw to X-Forwarded-For
    settings.API_AUTH_THROTTLE_RATE = "2/minute"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    bad = {"username": "x", "password": "y"}

    def guess(forwarded_for: str) -> int:
        return anon.post(
            "/api/auth/token", bad, format="json", HTTP_X_FORWARDED_FOR=forwarded_for
        ).status_code

    # when one client spends its budget, then forges the entries before the proxy's
    spent = [guess(f"10.0.0.{n}, 198.51.100.7") for n in range(3)]
    forged = [guess(f"192.0.2.{n}, 198.51.100.7") for n in range(5)]
    # then it stays throttled, while another client behind the same proxy is not
    assert spent == [400, 400, 429] and forged == [429] * 5
    assert guess("198.51.100.8") == 400


def _api_throttle_classes() -> set[type]:
    """Every throttle class an API view uses, and the default ones."""
    found: set[type] = set(api_settings.DEFAULT_THROTTLE_CLASSES)
    patterns = list(get_resolver().url_patterns)
    while patterns:
        pattern = patterns.pop()
        if isinstance(pattern, URLResolver):
            patterns.extend(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view_class = getattr(pattern.callback, "cls", None)
            found.update(getattr(view_class, "throttle_classes", []))
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("throttle_class", sorted(_api_throttle_classes(), key=str))
def test_no_throttle_takes_the_client_address_from_a_header_by_default(throttle_class):
    # given two requests from one address claiming different forwarded-for addresses
    factory = APIRequestFactory()
    requests = [
        factory.post("/api/auth/token", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR=forged)
        for forged in ("203.0.113.1", "203.0.113.2")
    ]
    # when the throttle identifies the client, then it is the address the request came from
    throttle = throttle_class()
    assert [throttle.get_ident(request) for request in requests] == ["192.0.2.1"] * 2


def test_the_api_has_throttles_to_check():
    # the test above checks something: at least the two auth endpoints are throttled
    assert _api_throttle_classes()
