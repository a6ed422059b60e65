"""Sending webhook deliveries: signed, to public addresses only, at least once, recorded once.

* The body is JSON (``id``, ``event``, ``key``, ``occurred_at``, ``payload``); the headers carry
  ``X-Signalfan-Timestamp`` (Unix seconds) and ``X-Signalfan-Signature: sha256=<hex>``, the
  HMAC-SHA256 of ``timestamp + "." + body`` with the webhook's secret, and ``Idempotency-Key``,
  the delivery's id, the same on every attempt, so a receiver can drop what it already has.
* The host is resolved at send time and every address it resolves to is checked: unless
  WEBHOOK_ALLOW_PRIVATE_ADDRESSES, a loopback, private, link-local, reserved or otherwise
  non-global address refuses the delivery, and the connection goes to the address that was
  checked (a second lookup could answer differently). Redirects are not followed.
* A worker *claims* a delivery (a token, one conditional UPDATE) before sending it, and records
  the outcome only while it still holds the claim: two workers never send one delivery at
  once, a delivery recorded as delivered is never sent again, and a worker that died holding a
  claim is taken over once its lease (WEBHOOK_SEND_LEASE_S) has run out.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import SplitResult, urlsplit

import certifi
import urllib3
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core.crypto import SecretDecryptionError, decrypt_secret
from core.metrics import WEBHOOK_ATTEMPTS
from notifications.models import Delivery, Webhook

logger = logging.getLogger(__name__)

Status = Delivery.Status
USER_AGENT = "signalfan-webhooks/1"
# What is kept of a receiver's answer to a failed attempt, to show why it failed.
ANSWER_CHARS = 300


# --- the request ----------------------------------------------------------------------------
def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + HMAC-SHA256 of ``timestamp.body`` with the secret (what receivers check)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def delivery_body(delivery: Delivery) -> bytes:
    notification = delivery.notification
    document = {
        "id": str(delivery.idempotency_key),
        "event": notification.event,
        "key": notification.key,
        "occurred_at": notification.created_at.isoformat(),
        "payload": notification.payload,
    }
    return json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def delivery_headers(*, delivery: Delivery, secret: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Signalfan-Event": delivery.notification.event,
        "X-Signalfan-Timestamp": timestamp,
        "X-Signalfan-Signature": webhook_signature(secret=secret, timestamp=timestamp, body=body),
        "Idempotency-Key": str(delivery.idempotency_key),
    }


# --- where it may go ------------------------------------------------------------------------
def address_refusal(address: str) -> str:
    """Why a delivery may not go to this IP address ('' when it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope is not part of it
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 address.
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    # The narrowest kind first: link-local and loopback addresses are private ones too.
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    return "" if ip.is_global else f"{address} is not a public address"


def webhook_url_refusal(url: str) -> str:
    """Why this URL cannot be a webhook ('' when it can); its host is checked again, resolved,
    at every delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs are accepted"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the URL may not carry a user name or password: deliveries are signed instead"
    try:
        parts.port  # noqa: B018  # raises on a port out of range
    except ValueError as exc:
        return f"the URL's port is invalid: {exc}"
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return ""  # a host name: checked once resolved, at every delivery
    if settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return ""
    refusal = address_refusal(str(literal))
    return f"refused: {refusal}" if refusal else ""


class Refused(Exception):
    """The delivery may not be sent to this URL (an address refused, a host unknown)."""


def _resolve(host: str, port: int) -> str:
    """The address to connect to, once every address of the host has passed the check."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        for address in addresses:
            refusal = address_refusal(address)
            if refusal:
                raise Refused(f"refused: {host} resolves to {refusal}")
    return addresses[0]


@dataclass(frozen=True)
class SendResult:
    response_code: int | None = None
    error: str = ""
    final: bool = False  # no later attempt can do better (a refused address)
    duration_ms: float = 0.0
    # False when the failure is not the webhook's (it is disabled, or the platform's keys
    # cannot decrypt its secret): it does not count towards disabling it.
    counts: bool = True

    @property
    def ok(self) -> bool:
        return self.response_code is not None and 200 <= self.response_code < 300


def _pool(parts: SplitResult, address: str) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_S)
    if parts.scheme == "https":
        # To the checked address, with the URL's host for SNI and the certificate check.
        return urllib3.HTTPSConnectionPool(
            address,
            parts.port or 443,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=parts.hostname,
            assert_hostname=parts.hostname,
        )
    return urllib3.HTTPConnectionPool(address, parts.port or 80, timeout=timeout, retries=False)


def webhook_post(*, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
    """POST once; never raises for what the network or the receiver does."""
    started = time.monotonic()
    parts = urlsplit(url)
    try:
        address = _resolve(parts.hostname or "", parts.port or 0)
        pool = _pool(parts, address)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        with pool:
            response = pool.urlopen(
                "POST",
                target,
                body=body,
                headers={**headers, "Host": parts.netloc},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            answer = response.read(ANSWER_CHARS, decode_content=False)
            response.release_conn()
    except Refused as exc:
        return SendResult(error=str(exc), final=True, duration_ms=_ms(started))
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        return SendResult(error=f"{type(exc).__name__}: {exc}", duration_ms=_ms(started))
    code = response.status
    error = "" if 200 <= code < 300 else _answer_error(code, answer)
    return SendResult(response_code=code, error=error, duration_ms=_ms(started))


def _answer_error(code: int, answer: bytes) -> str:
    text = answer.decode("utf-8", errors="replace").replace("\x00", "").strip()
    return f"HTTP {code}" + (f": {text}" if text else "")


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# --- one attempt ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AttemptOutcome:
    status: str  # the delivery's status after this attempt, or "skipped" (nothing to do now)
    retry_in: float | None = None  # seconds until the next attempt is due


def delivery_attempt(*, delivery_id: int) -> AttemptOutcome:
    """Send the delivery once if it is due and nobody else is sending it, then record what
    happened. Idempotent: a delivery delivered or failed is left alone."""
    token = _claim(delivery_id)
    if token is None:
        return _unclaimed(delivery_id)
    delivery = Delivery.objects.select_related("webhook", "notification").get(pk=delivery_id)
    result = _send(delivery)
    return _record(delivery_id, token, result)


def _claim(delivery_id: int) -> str | None:
    now = timezone.now()
    lease = now - timedelta(seconds=settings.WEBHOOK_SEND_LEASE_S)
    token = uuid.uuid4().hex
    claimed = (
        Delivery.objects.filter(pk=delivery_id, status__in=(Status.PENDING, Status.RETRYING))
        .filter(Q(send_token="") | Q(claimed_at__lt=lease))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(send_token=token, claimed_at=now, attempts=F("attempts") + 1, updated_at=now)
    )
    return token if claimed else None


def _unclaimed(delivery_id: int) -> AttemptOutcome:
    """Why the delivery was not claimed, and when to look again (None: never)."""
    row = (
        Delivery.objects.filter(pk=delivery_id)
        .values("status", "send_token", "claimed_at", "next_attempt_at")
        .first()
    )
    if row is None or row["status"] in (Status.DELIVERED, Status.FAILED):
        return AttemptOutcome("skipped")  # gone with its webhook, or done
    now = timezone.now()
    if row["send_token"] and row["claimed_at"] is not None:
        # Another worker is sending it, or died doing so: look again when its lease ends.
        expires = row["claimed_at"] + timedelta(seconds=settings.WEBHOOK_SEND_LEASE_S)
        return AttemptOutcome("skipped", retry_in=max((expires - now).total_seconds(), 0) + 0.1)
    due = row["next_attempt_at"] or now
    return AttemptOutcome("skipped", retry_in=max((due - now).total_seconds(), 0) + 0.05)


def _send(delivery: Delivery) -> SendResult:
    if not delivery.webhook.is_active:
        return SendResult(error="not sent: the webhook is disabled", final=True, counts=False)
    try:
        secret = decrypt_secret(delivery.webhook.secret_encrypted)
    except SecretDecryptionError:
        logger.error("the secret of webhook %s cannot be decrypted", delivery.webhook_id)
        return SendResult(
            error="not sent: the webhook's secret cannot be decrypted", final=True, counts=False
        )
    body = delivery_body(delivery)
    headers = delivery_headers(delivery=delivery, secret=secret, body=body)
    return webhook_post(url=delivery.webhook.url, body=body, headers=headers)


def backoff_s(attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt: doubling, bounded."""
    return min(settings.WEBHOOK_BACKOFF_S * 2 ** (attempts - 1), settings.WEBHOOK_BACKOFF_MAX_S)


def _record(delivery_id: int, token: str, result: SendResult) -> AttemptOutcome:
    now = timezone.now()
    with transaction.atomic():
        row = Delivery.objects.select_for_update().filter(pk=delivery_id, send_token=token).first()
        if row is None:
            # The claim was taken over (this worker outlived its lease) or the webhook is
            # gone: whoever holds it now records, this attempt leaves no trace.
            return AttemptOutcome("skipped")
        _log_attempt(row, result, now)
        retry_in = None
        if result.ok:
            row.status, row.delivered_at, row.next_attempt_at = Status.DELIVERED, now, None
        elif result.final or row.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            row.status, row.next_attempt_at = Status.FAILED, None
        else:
            retry_in = backoff_s(row.attempts)
            row.status, row.next_attempt_at = Status.RETRYING, now + timedelta(seconds=retry_in)
        row.save()
        _webhook_account(row, result, now)
    WEBHOOK_ATTEMPTS.labels(outcome=row.status).inc()
    return AttemptOutcome(row.status, retry_in)


def _log_attempt(row: Delivery, result: SendResult, now: datetime) -> None:
    row.response_code, row.last_error = result.response_code, result.error[:2000]
    row.send_token, row.updated_at = "", now
    entry = {
        "attempt": row.attempts,
        "at": now.isoformat(),
        "response_code": result.response_code,
        "error": result.error[: ANSWER_CHARS + 20],
        "duration_ms": result.duration_ms,
    }
    row.attempt_log = [*row.attempt_log, entry][-settings.WEBHOOK_MAX_ATTEMPTS :]


def _webhook_account(row: Delivery, result: SendResult, now: datetime) -> None:
    """A delivered delivery clears the webhook's failures; a failed one adds one, and the
    WEBHOOK_DISABLE_AFTER-th in a row disables it, with the reason."""
    webhooks = Webhook.objects.filter(pk=row.webhook_id)
    if row.status == Status.DELIVERED:
        webhooks.filter(consecutive_failures__gt=0).update(consecutive_failures=0)
        return
    if row.status != Status.FAILED or not result.counts:
        return
    webhooks.update(consecutive_failures=F("consecutive_failures") + 1)
    limit = settings.WEBHOOK_DISABLE_AFTER
    reason = f"disabled after {limit} failed deliveries in a row; the last: {result.error}"
    disabled = webhooks.filter(is_active=True, consecutive_failures__gte=limit).update(
        is_active=False, disabled_at=now, disabled_reason=reason[:500]
    )
    if disabled:
        logger.warning("webhook %s disabled: %s", row.webhook_id, reason)
