"""New exchange keys are tried with one signed, read-only request before they are stored.

A balance fetch through ccxt (it moves nothing and needs no market), on the exchange's testnet
for a sandbox credential, honouring EXCHANGE_URL_OVERRIDES like every other ccxt client (the
exchange simulator in tests and demos). It runs in the request, outside any transaction, once
per new credential: not through the workers' exchange hub, which pools keyed instances for
the fan-out. The keys stay in this call's memory; what comes back is the exchange's reason,
with the keys and URL query strings (signatures) taken out.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import ccxt
from django.conf import settings
from django.core.exceptions import ValidationError

from markets.exchange_data import exchange_url_override

logger = logging.getLogger(__name__)

REASON_CHARS = 300
# A URL's query string holds the request's signature (and, on some exchanges, the key).
QUERY_RE = re.compile(r"\?\S*")


def credential_keys_check(
    *, exchange: str, api_key: str, secret: str, passphrase: str = "", is_sandbox: bool = False
) -> None:
    """Fetch the account's balance with these keys; ValidationError naming the field and the
    exchange's reason (keys refused, exchange unreachable, no sandbox, …) when that fails."""
    if not settings.CREDENTIAL_CHECK:
        return  # off only where no exchange is reachable by design (see the setting)
    secrets = [s for s in (api_key, secret, passphrase) if s]
    client = _signed_client(
        exchange=exchange,
        api_key=api_key,
        secret=secret,
        passphrase=passphrase,
        is_sandbox=is_sandbox,
    )
    try:
        client.fetch_balance()
    except Exception as exc:
        field, reason = _refusal(exc)
        raise ValidationError({field: _scrubbed(reason, secrets)}) from None
    finally:
        _close(client)


def _signed_client(
    *, exchange: str, api_key: str, secret: str, passphrase: str, is_sandbox: bool
) -> Any:
    config: dict[str, Any] = {
        "apiKey": api_key,
        "secret": secret,
        "timeout": settings.EXCHANGE_TIMEOUT_MS,
        "enableRateLimit": False,  # one request (and the markets): nothing to pace
    }
    if passphrase:
        config["password"] = passphrase
    client = getattr(ccxt, exchange)(config)
    if is_sandbox:
        _use_sandbox(client, exchange)
    return exchange_url_override(client, exchange)


def _use_sandbox(client: Any, exchange: str) -> None:
    """A sandbox credential holds testnet keys: they are tried on the testnet, never on the
    exchange itself, and an exchange without one cannot take them."""
    try:
        # ccxt 4.5 fails with a TypeError, not NotSupported, when urls['test'] is None.
        if not client.urls.get("test"):
            raise ccxt.NotSupported(exchange)
        client.set_sandbox_mode(True)
    except (ccxt.NotSupported, TypeError):
        _close(client)
        raise ValidationError(
            {"is_sandbox": f"{exchange} has no sandbox (testnet) in ccxt: use its live keys"}
        ) from None


def _refusal(exc: Exception) -> tuple[str, str]:
    """The field a failed check is about, and why, in the exchange's words."""
    said = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ccxt.AuthenticationError):  # PermissionDenied, AccountSuspended too
        return "api_key", f"the exchange refused these keys ({said})"
    if isinstance(exc, ccxt.OperationFailed):  # network errors, timeouts, 5xx, rate limits
        return "exchange", f"the exchange could not be reached to check the keys ({said})"
    if isinstance(exc, ccxt.BaseError):
        return "exchange", f"the exchange refused the check of the keys ({said})"
    # Not the exchange's words but ccxt's own failure on its answer: said, and logged.
    logger.warning("credential check failed unexpectedly: %s", type(exc).__name__)
    return "exchange", f"the exchange's answer to the check could not be read ({said})"


def _scrubbed(reason: str, secrets: list[str]) -> str:
    reason = QUERY_RE.sub("?…", reason)
    for value in secrets:
        reason = reason.replace(value, "***")
    return reason[:REASON_CHARS]


def _close(client: Any) -> None:
    session = getattr(client, "session", None)
    if session is not None:
        session.close()
