"""Helpers for the API tests: authenticated clients and the shape of error answers."""

from __future__ import annotations

from typing import Any

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from subscriptions.services import credential_create

VALID_CODE = """
LOOKBACK = 10

def generate_signal(candles, settings):
    return None
"""


def client_for(user: Any, *, keyword: str = "Bearer") -> APIClient:
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {token.key}")
    return client


def field_errors(response: Any) -> dict[str, list[str]]:
    """The field errors of a 400, after checking the answer has the common error shape."""
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    return body["errors"]


def deploy_payload(**overrides: Any) -> dict[str, Any]:
    payload = {
        "name": "Momentum",
        "description": "buys strength",
        "code": VALID_CODE,
        "exchange": "binance",
        "symbol": "ETH/BTC",
        "resolution": "5m",
        "settings": {"fast": 5},
        "is_public": False,
        "is_marketplace": False,
    }
    payload.update(overrides)
    return payload


def make_credential(user: Any, *, exchange: str = "binance", label: str = "main"):
    return credential_create(
        user=user,
        exchange=exchange,
        label=label,
        api_key="AKIA-plain-key-1234",
        secret="very-secret-value-XYZ",
    )
