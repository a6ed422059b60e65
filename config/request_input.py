"""Request input the databases cannot store is refused before anything reads it.

PostgreSQL refuses NUL in text (the driver raises, the request answers 500) and no database
takes a lone surrogate (it cannot be encoded as UTF-8); SQLite stores both. Instead of relying
on every field, filter, lookup and backend to notice, each request's path, query string,
headers, cookies and form fields are checked once here, and JSON bodies when they are parsed
(:mod:`config.parsers`). The ``Authorization`` header is left to the authentication class, so
that an unusable token is the documented ``401``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Checked by config.authentication, which answers 401 like for any other bad token.
AUTH_HEADER = "Authorization"


def unstorable(text: str) -> str | None:
    """Why no database column can hold ``text``, or None when it can."""
    if "\x00" in text:
        return "NUL characters are not allowed."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Lone surrogate characters are not allowed."
    return None


def printable(text: str) -> str:
    """``text`` safe to echo in an error message (NUL and lone surrogates escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _problems(request: HttpRequest) -> Iterator[tuple[str, str]]:
    """(field, message) for each unstorable part; ``field`` is a query or form field name,
    else ``non_field_errors``."""
    if reason := unstorable(request.path_info):
        yield "non_field_errors", f"URL path: {reason}"
    sources = [("query parameter", request.GET)]
    # Form bodies (the admin's); API bodies are JSON only, checked by their parser, and reading
    # request.POST here would consume the stream DRF parses.
    if _is_form_post(request) and not _is_api(request):
        sources.append(("form field", request.POST))
    for kind, params in sources:
        for name, values in params.lists():
            if reason := unstorable(name):
                yield "non_field_errors", f"{kind} name: {reason}"
            for value in values:
                if reason := unstorable(value):
                    yield name, reason
    for header, value in request.headers.items():
        if header != AUTH_HEADER and (reason := unstorable(header + value)):
            yield "non_field_errors", f"{header} header: {reason}"
    # Parsed cookie values differ from the header: quoted values may spell NUL as \000.
    for cookie, value in request.COOKIES.items():
        if reason := unstorable(cookie + value):
            yield "non_field_errors", f"{printable(cookie)} cookie: {reason}"


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def _is_form_post(request: HttpRequest) -> bool:
    return request.method == "POST" and request.content_type in FORM_CONTENT_TYPES


def _refusal(request: HttpRequest, errors: dict[str, list[str]]) -> HttpResponse:
    if _is_api(request):
        body = {"detail": "Invalid input.", "code": "invalid", "errors": errors}
        return JsonResponse(body, status=400)
    lines = [f"{field}: {message}" for field, messages in errors.items() for message in messages]
    return HttpResponseBadRequest("\n".join(lines), content_type="text/plain; charset=utf-8")


class StorableInputMiddleware:
    """Answers 400 to a request whose path, query, headers, cookies or form fields hold
    characters the database cannot store; the API's error format under ``/api/``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        errors: dict[str, list[str]] = {}
        for field, message in _problems(request):
            errors.setdefault(printable(field), []).append(message)
        if errors:
            return _refusal(request, errors)
        return self.get_response(request)
