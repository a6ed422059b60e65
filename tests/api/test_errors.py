"""The common error format, and inputs that must never turn into a 500."""

from __future__ import annotations

import json

import pytest

from strategies.models import Strategy
from tests.api.helpers import deploy_payload, field_errors
from tests.factories import StrategyFactory

ERROR_KEYS = {"detail", "code", "errors"}


def _deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"x": value}
    return {"deep": value}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing-here",
        "/api/strategies/abc",
        "/api/strategies/-1",
        "/api/strategies/1/unknown",
        "/api/strategies/",
        "/api/strategies/999999999999999999999999999",
    ],
)
def test_unknown_urls_and_ids_answer_404_in_the_common_format(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found", "errors": {}}


@pytest.mark.django_db
def test_method_not_allowed_and_unsupported_media_type(api):
    assert api.get("/api/credentials/1").status_code == 405
    not_allowed = api.patch("/api/strategies", {}, format="json")
    assert not_allowed.status_code == 405 and set(not_allowed.json()) == ERROR_KEYS
    form = api.post("/api/strategies/deploy", {"name": "x"})  # multipart, not JSON
    assert form.status_code == 415 and form.json()["code"] == "unsupported_media_type"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[" * 100_000 + "]" * 100_000,
        '{"settings": ' + "[" * 5000 + "]" * 5000 + "}",
        "[]",
        "null",
        '"text"',
        "NaN",
        '{"name": "x", "capital": Infinity}',
    ],
)
def test_malformed_or_pathological_bodies_are_400(api, body):
    response = api.generic("POST", "/api/strategies/deploy", body, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) == ERROR_KEYS
    assert not Strategy.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": "bad\x00name"}, "name"),
        ({"name": "\ud800"}, "name"),
        ({"settings": {"a": "nul\x00"}}, "settings"),
        ({"settings": {"\udfff": 1}}, "settings"),
        ({"settings": _deep(40)}, "settings"),
        ({"settings": {"big": "x" * 70_000}}, "settings"),
        ({"code": "x=" + "-" * 100_000 + "1"}, "code"),
        ({"code": "x=" + "+".join(["a"] * 60_000)}, "code"),
        ({"name": "x" * 121}, "name"),
    ],
)
def test_values_the_database_or_the_parser_cannot_take_are_400(api, override, field):
    # json.dumps escapes lone surrogates in the JSON text, as a client encoder would
    body = json.dumps(deploy_payload(**override))
    response = api.generic("POST", "/api/strategies/deploy", body, content_type="application/json")
    assert response.status_code == 400
    assert field in field_errors(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "status", "param"),
    [
        ("page=0", 400, "page"),
        ("page=abc", 400, "page"),
        ("page=-1", 400, "page"),
        ("page=2", 404, None),
        ("page=" + "9" * 5000, 404, None),
        ("page_size=0", 400, "page_size"),
        ("page_size=201", 400, "page_size"),
        ("page_size=" + "9" * 5000, 400, "page_size"),
        ("is_public=maybe", 400, "is_public"),
        ("is_public=", 400, "is_public"),
        ("resolution=7m", 400, "resolution"),
        ("ordering=password", 400, "ordering"),
        ("ordering=,,,", 400, "ordering"),
        ("ordering=name,", 400, "ordering"),
        ("search=%00", 400, "search"),
    ],
)
def test_bad_list_parameters_are_client_errors(api, me, query, status, param):
    StrategyFactory(owner=me)
    response = api.get(f"/api/strategies?{query}")
    assert response.status_code == status
    body = response.json()
    assert set(body) == ERROR_KEYS
    if param:
        assert param in body["errors"]


@pytest.mark.django_db
def test_pagination_answers_count_and_links(api, me):
    for _ in range(3):
        StrategyFactory(owner=me)
    first = api.get("/api/strategies?page_size=2").json()
    assert first["count"] == 3 and len(first["results"]) == 2
    assert first["next"].endswith("page=2&page_size=2") and first["previous"] is None
    second = api.get("/api/strategies?page_size=2&page=2").json()
    assert len(second["results"]) == 1 and second["next"] is None
