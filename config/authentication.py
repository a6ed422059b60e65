"""API authentication. Its own module: DRF imports it while rest_framework.views loads."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request


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
        return self.authenticate_credentials(parts[1])

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
