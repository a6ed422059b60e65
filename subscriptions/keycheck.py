"""New exchange keys are tried with one signed, read-only request before they are stored.

A balance fetch through ccxt (it moves nothing and needs no market), on the exchange's testnet
for a sandbox credential, honouring EXCHANGE_URL_OVERRIDES like every other ccxt client (the
exchange simulator in tests and demos). It runs in the request, outside any transaction, once
per new credential: not through the workers' exchange hub, which pools keyed instances for
the fan-out. The keys stay in this call's memory; what comes back is the exchange's reason,
with the keys and URL query strings (signatures) taken out.

Where the exchange tells what a key may do (Binance: ``GET /sapi/v1/account/apiRestrictions``,
through ccxt's implicit method), that is asked too: a key that can withdraw is refused (the
platform never needs it, and a leaked one empties the account), a key bound to no IP address is
accepted with a warning. Elsewhere the answer says the permissions were not checked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ccxt
from django.conf import settings
from django.core.exceptions import ValidationError

from markets.exchange_data import exchange_error_text, exchange_url_override

logger = logging.getLogger(__name__)

REASON_CHARS = 300
# The ccxt method that reads a key's permissions, per exchange that has one.
PERMISSION_METHODS = {"binance": "sapi_get_account_apirestrictions"}
WITHDRAWALS_REFUSED = (
    "withdrawals are enabled on this key: the platform never withdraws, and a leaked key that "
    "can withdraw empties the account; create a key without the withdrawal permission"
)
NO_IP_RESTRICTION = (
    "this key is not restricted to IP addresses: anyone holding it can trade from anywhere; "
    "restricting it to the platform's addresses is safer"
)
NO_SPOT_TRADING = "this key cannot trade spot: orders sent with it will be refused"


@dataclass(frozen=True)
class KeyCheck:
    """What the check of new keys found: the key's permissions as the exchange reported them
    (empty when it exposes none, see ``note``) and what the owner should know."""

    permissions: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def checked(self) -> bool:
        return bool(self.permissions)


def permissions_assess(raw: Mapping[str, Any]) -> tuple[dict[str, bool], str, list[str]]:
    """Binance's apiRestrictions answer -> (permissions, why the key is refused or "", warnings)."""
    permissions = {k: bool(v) for k, v in raw.items() if isinstance(v, bool)}
    refusal = WITHDRAWALS_REFUSED if permissions.get("enableWithdrawals") else ""
    warnings = []
    if not permissions.get("ipRestrict", True):
        warnings.append(NO_IP_RESTRICTION)
    if not permissions.get("enableSpotAndMarginTrading", True):
        warnings.append(NO_SPOT_TRADING)
    return permissions, refusal, warnings


def permissions_unsupported_note(exchange: str) -> str:
    return (
        f"{exchange} does not expose an API key's permissions through ccxt: the key was not "
        "checked for withdrawal rights or an IP restriction; make sure it cannot withdraw"
    )


def credential_keys_check(
    *, exchange: str, api_key: str, secret: str, passphrase: str = "", is_sandbox: bool = False
) -> KeyCheck:
    """Fetch the account's balance with these keys, then their permissions where the exchange
    exposes them; ValidationError naming the field and the reason (keys refused, exchange
    unreachable, no sandbox, withdrawals enabled, …) when the keys cannot be taken."""
    if not settings.CREDENTIAL_CHECK:
        # Off only where no exchange is reachable by design (see the setting).
        return KeyCheck(note="keys not checked (CREDENTIAL_CHECK is off)")
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
        return _permissions_check(client, exchange, secrets)
    except Exception as exc:
        if isinstance(exc, ValidationError):
            raise
        field_name, reason = _refusal(exc)
        raise ValidationError({field_name: _scrubbed(reason, secrets)}) from None
    finally:
        _close(client)


def _permissions_check(client: Any, exchange: str, secrets: list[str]) -> KeyCheck:
    method = PERMISSION_METHODS.get(exchange)
    if method is None or not hasattr(client, method):
        return KeyCheck(note=permissions_unsupported_note(exchange))
    try:
        raw = getattr(client, method)()
    except Exception as exc:  # e.g. a testnet without the endpoint: said, not refused
        reason = _scrubbed(exchange_error_text(exc), secrets)
        return KeyCheck(note=f"the key's permissions could not be read ({reason})")
    permissions, refusal, warnings = permissions_assess(raw)
    if refusal:
        raise ValidationError({"api_key": refusal})
    return KeyCheck(permissions=permissions, warnings=warnings)


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
    said = exchange_error_text(exc)
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
    for value in secrets:
        reason = reason.replace(value, "***")
    return reason[:REASON_CHARS]


def _close(client: Any) -> None:
    session = getattr(client, "session", None)
    if session is not None:
        session.close()
