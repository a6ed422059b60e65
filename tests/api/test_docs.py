from __future__ import annotations

from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

# The fixed paths of the issue, with their methods (and the orders of live trading, issue 6,
# backtests, and notifications, issue 14).
OPERATIONS = {
    "/api/auth/register": {"post"},
    "/api/auth/token": {"post"},
    "/api/strategies": {"get"},
    "/api/strategies/deploy": {"post"},
    "/api/strategies/{id}": {"get"},
    "/api/strategies/{id}/settings": {"put"},
    "/api/strategies/{id}/code": {"put"},
    "/api/strategies/{id}/stats": {"get"},
    "/api/strategies/{id}/executions": {"get"},
    "/api/strategies/{id}/performance": {"get"},
    "/api/strategies/{id}/subscribe": {"post"},
    "/api/strategies/subscriptions": {"get"},
    "/api/strategies/subscriptions/{id}": {"get", "put", "delete"},
    "/api/strategies/subscriptions/{id}/pause": {"post"},
    "/api/strategies/subscriptions/{id}/resume": {"post"},
    "/api/strategies/subscriptions/{id}/stats": {"get"},
    "/api/strategies/subscriptions/{id}/equity": {"get"},
    "/api/strategies/subscriptions/{id}/equity.png": {"get"},
    "/api/strategies/subscriptions/{id}/equity.svg": {"get"},
    "/api/strategies/subscriptions/{id}/trades": {"get"},
    "/api/strategies/subscriptions/{id}/orders": {"get"},
    "/api/strategies/subscriptions/{id}/close": {"post"},
    "/api/strategies/subscriptions/{id}/protection-trips": {"get"},
    "/api/strategies/subscriptions/{id}/resync": {"post"},
    "/api/strategies/subscriptions/{id}/divergences": {"get"},
    "/api/strategies/subscriptions/{id}/divergence": {"get"},
    "/api/credentials": {"get", "post"},
    "/api/credentials/{id}": {"delete"},
    "/api/backtests": {"get", "post"},
    "/api/backtests/{id}": {"get"},
    "/api/backtests/{id}/chart.png": {"get"},
    "/api/backtests/{id}/chart.svg": {"get"},
    "/api/backtests/{id}/report.html": {"get"},
    "/api/webhooks": {"get", "post"},
    "/api/webhooks/{id}": {"get", "delete"},
    "/api/webhooks/{id}/deliveries": {"get"},
    "/api/notifications": {"get"},
    "/api/notifications/preferences": {"get", "put"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture
def schema(anon):
    response = anon.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


@pytest.mark.django_db
def test_schema_is_valid_openapi_3_and_lists_exactly_the_fixed_endpoints(schema):
    validate_schema(schema)  # raises on any violation of the OpenAPI 3 specification
    assert schema["openapi"].startswith("3.")
    found = {p: {m for m in item if m in HTTP_METHODS} for p, item in schema["paths"].items()}
    assert found == OPERATIONS
    assert sum(len(methods) for methods in found.values()) == 45


@pytest.mark.django_db
def test_every_operation_documents_its_errors_in_the_common_format(schema):
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        errors = {code for code in responses if code.startswith(("4", "5"))}
        assert errors, (method, path)
        for code in errors:
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Error", (method, path, code)
        if not path.startswith("/api/auth/"):
            assert "401" in responses and operation["security"] == [{"tokenAuth": []}]
        if "{id}" in path:
            assert "404" in responses, (method, path)
        if "requestBody" in operation:
            assert "400" in responses, (method, path)


@pytest.mark.django_db
def test_schema_documents_bearer_tokens_strict_bodies_and_field_names(schema):
    components = schema["components"]
    assert components["securitySchemes"]["tokenAuth"] == {"type": "http", "scheme": "bearer"}
    deploy = components["schemas"]["StrategyDeployRequest"]
    assert deploy["additionalProperties"] is False
    assert set(deploy["properties"]) == {
        "name",
        "description",
        "code",
        "exchange",
        "symbol",
        "resolution",
        "settings",
        "is_public",
        "is_marketplace",
    }
    subscribe = components["schemas"]["SubscribeRequest"]["properties"]
    assert {"mode", "capital", "risk_per_trade", "leverage", "credential_id"} <= set(subscribe)
    # the live-trading policies, with their choices
    policies = {"min_order_policy", "join_policy", "entry_order_type", "margin_mode"}
    assert policies <= set(subscribe)
    assert policies <= set(components["schemas"]["SubscriptionUpdateRequest"]["properties"])
    assert policies <= set(components["schemas"]["Subscription"]["properties"])
    assert components["schemas"]["JoinPolicyEnum"]["enum"] == ["next_signal", "join_now"]
    # an order shows nothing of how it is sent (no claim token) and the stats show the position
    assert "send_token" not in components["schemas"]["Order"]["properties"]
    assert "position" in components["schemas"]["SubscriptionStats"]["properties"]
    capital_number = subscribe["capital"]["oneOf"][1]
    assert capital_number["minimum"] == 0 and capital_number["exclusiveMinimum"] is True
    credential = components["schemas"]["CredentialCreateRequest"]["properties"]
    assert {"exchange", "label", "api_key", "secret", "passphrase", "is_sandbox"} == set(credential)
    # what a credential looks like from the outside: no secret, a masked key
    assert set(components["schemas"]["Credential"]["properties"]) == {
        "id",
        "exchange",
        "label",
        "api_key_masked",
        "is_sandbox",
        "created_at",
        "permissions",
        "key_warnings",
        "key_note",
        "permissions_checked_at",
    }


@pytest.mark.django_db
def test_swagger_ui_renders(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page and "/api/schema/" in page
    # its assets are served by the platform itself (no CDN): the UI works offline
    assert "cdn.jsdelivr.net" not in page and "/static/drf_spectacular_sidecar/" in page


@pytest.mark.django_db
def test_spectacular_command_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=StringIO()
    )
    assert "/api/strategies/deploy" in yaml.safe_load(out.read_text())["paths"]
