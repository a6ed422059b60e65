"""API request parsing. Its own module: DRF imports it while rest_framework.views loads."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers

from config.request_input import printable, unstorable


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with nesting too deep for Python's decoder answered as a 400, and
    strings no database can store (NUL, lone surrogates; JSON escapes both) refused as field
    errors of the top-level field holding them, before any serializer, filter or query."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from exc
        errors = _unstorable_strings(data)
        if errors:
            raise exceptions.ValidationError(errors)
        return data


def _unstorable_strings(data: Any) -> dict[str, list[str]]:
    """The first unstorable string (key or value) under each top-level field, with its path.

    Iterative: the decoder accepts nesting deeper than Python's recursion limit allows here.
    """
    found: dict[str, list[str]] = {}
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        problems: list[tuple[tuple[str, ...], str | None]] = []
        if isinstance(value, dict):
            stack.extend((item, (*path, key)) for key, item in value.items())
            problems = [((*path, key), unstorable(key)) for key in value]
        elif isinstance(value, list):
            stack.extend((item, (*path, str(index))) for index, item in enumerate(value))
        elif isinstance(value, str):
            problems = [(path, unstorable(value))]
        for where, reason in problems:
            if reason is not None:
                field = _field(data, where)
                found.setdefault(field, [f"{reason[:-1]} (at {_dotted(where)})."])
    return found


def _field(data: Any, path: tuple[str, ...]) -> str:
    """The request field an error belongs to: the top-level key, when it is one to name."""
    if isinstance(data, dict) and path and unstorable(path[0]) is None:
        return path[0]
    return "non_field_errors"


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(printable(part) for part in path) or "top level"
