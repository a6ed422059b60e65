"""API authentication. Its own module: DRF imports it while rest_framework.views loads."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

# Printable ASCII up to the column's length: anything else matches no stored key, so it is
# refused before the query (a NUL would make PostgreSQL's driver raise).
TOKEN_KEY = re.compile(r"[!-~]+")
TOKEN_KEY_MAX_LENGTH = Token._meta.get_field("key").max_length or 40


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <key>`` (documented); ``Token <key>`` is accepted as well."""

    keyword = "Bearer"
    accepted_keywords = ("bearer", "token")

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        parts = request.headers.get("Authorization", "").split()
        if not parts or parts[0].lower() not in self.accepted_keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        key = parts[1]
        if len(key) > TOKEN_KEY_MAX_LENGTH or not TOKEN_KEY.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return self.authenticate_credentials(key)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
