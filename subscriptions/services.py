"""Writes on subscriptions and credentials. Every change keeps subscriber_count exact."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, TextField, Value, When
from django.utils import timezone

from core.events import EventType, event_emit
from notifications.models import NotificationEvent
from notifications.services import Notice, notifications_record
from strategies.models import Strategy
from strategies.services import strategy_mark_retired, strategy_registry_sync
from subscriptions.crypto import CredentialDecryptionError, encrypt_secret, rotate_secret
from subscriptions.equity import equity_point_capital_change
from subscriptions.keycheck import credential_keys_check
from subscriptions.models import (
    PROTECTION_FIELDS,
    BrokerCredential,
    EquityPoint,
    StrategySubscription,
)

Status = StrategySubscription.Status
MAX_RISK_PER_TRADE = Decimal("0.1")
# Bounds of the protections: beyond them a value is a mistake, not a choice.
MAX_CAPITAL = Decimal("1000000000000")
MAX_OPEN_TRADES = 1000
MAX_COOLDOWN_LOSSES = 100
MAX_COOLDOWN_MINUTES = 30 * 24 * 60
MAX_SLIPPAGE_CAP_BPS = 1000
# name -> (lowest accepted, highest accepted, lowest excluded); None: no such bound.
PROTECTION_BOUNDS: dict[str, tuple[Decimal | int | None, Decimal | int, bool]] = {
    "max_drawdown_pct": (Decimal(0), Decimal(100), True),
    "daily_loss_limit_pct": (Decimal(0), Decimal(100), True),
    "max_order_notional": (Decimal(0), MAX_CAPITAL, True),
    "max_open_trades": (1, MAX_OPEN_TRADES, False),
    "cooldown_after_losses": (1, MAX_COOLDOWN_LOSSES, False),
    "cooldown_minutes": (1, MAX_COOLDOWN_MINUTES, False),
    "slippage_cap_bps": (1, MAX_SLIPPAGE_CAP_BPS, False),
}
SIZING_FIELDS = ("capital", "risk_per_trade", "leverage")


def _sizing(subscription: StrategySubscription) -> dict[str, Decimal]:
    # Compared as numbers: 1000 and 1000.00000000 are one capital.
    return {name: Decimal(getattr(subscription, name)) for name in SIZING_FIELDS}


def sizing_validate(*, capital: Decimal, risk_per_trade: Decimal, leverage: Decimal) -> None:
    errors: dict[str, str] = {}
    if capital <= 0:
        errors["capital"] = "capital must be greater than 0"
    if not Decimal(0) < risk_per_trade <= MAX_RISK_PER_TRADE:
        errors["risk_per_trade"] = f"risk_per_trade must be in (0, {MAX_RISK_PER_TRADE}]"
    if not 1 <= leverage <= django_settings.MAX_LEVERAGE:
        errors["leverage"] = f"leverage must be between 1 and {django_settings.MAX_LEVERAGE}"
    if errors:
        raise ValidationError(errors)


def protections_validate(values: Mapping[str, Any]) -> None:
    """Each protection given is off (None) or within its bounds, and a cooldown has both its
    count and its duration. ``values``: the protections as they will be stored."""
    errors: dict[str, str] = {}
    for name, (low, high, low_excluded) in PROTECTION_BOUNDS.items():
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            errors[name] = f"{name} must be a number or null"
        elif (value <= low if low_excluded else value < low) or value > high:  # type: ignore[operator]
            bound = f"greater than {low}" if low_excluded else f"at least {low}"
            errors[name] = f"{name} must be {bound} and at most {high}, or null (off)"
    close = values.get("close_on_max_drawdown", False)
    if not isinstance(close, bool):
        errors["close_on_max_drawdown"] = "close_on_max_drawdown must be true or false"
    count, minutes = values.get("cooldown_after_losses"), values.get("cooldown_minutes")
    if (count is None) != (minutes is None) and not errors:
        missing = "cooldown_minutes" if minutes is None else "cooldown_after_losses"
        errors[missing] = "a cooldown needs both cooldown_after_losses and cooldown_minutes"
    if errors:
        raise ValidationError(errors)


def _protections_of(subscription: StrategySubscription) -> dict[str, Any]:
    return {name: getattr(subscription, name) for name in PROTECTION_FIELDS}


def _protections_apply(
    subscription: StrategySubscription, given: Mapping[str, Any] | None
) -> list[str]:
    """Set the protections given (the others keep their values); returns the fields set.

    Turning the maximum drawdown on starts its peak at the current equity: a drawdown is
    measured from when the guard was set, not from an older peak it never saw.
    """
    given = dict(given or {})
    unknown = set(given) - set(PROTECTION_FIELDS)
    if unknown:
        raise ValidationError({name: "not a protection" for name in sorted(unknown)})
    values = {**_protections_of(subscription), **given}
    protections_validate(values)
    turned_on = subscription.max_drawdown_pct is None and values["max_drawdown_pct"] is not None
    for name, value in given.items():
        setattr(subscription, name, value)
    if turned_on and subscription.pk is not None:
        subscription.equity_peak = _equity_now(subscription)
        return [*given, "equity_peak"]
    return list(given)


def _equity_now(subscription: StrategySubscription) -> Decimal:
    last = EquityPoint.objects.filter(subscription=subscription).order_by("-id").first()
    return last.equity if last is not None else Decimal(subscription.capital)


# The live-trading policies and the values each accepts (blank margin mode: the account's own).
POLICY_CHOICES: dict[str, list[str]] = {
    "min_order_policy": list(StrategySubscription.MinOrderPolicy.values),
    "join_policy": list(StrategySubscription.JoinPolicy.values),
    "entry_order_type": list(StrategySubscription.EntryOrderType.values),
    "margin_mode": ["", *StrategySubscription.MarginMode.values],
}


def _validate_trading_policies(**values: str | None) -> None:
    """Each policy given (None: not given) must be one of its choices."""
    errors: dict[str, str] = {}
    for name, value in values.items():
        allowed = POLICY_CHOICES[name]
        if value is not None and value not in allowed:
            errors[name] = f"{name} must be one of {', '.join(repr(c) for c in allowed)}"
    if errors:
        raise ValidationError(errors)


def _credential_attach(
    *, user: User, strategy: Strategy, mode: str, credential: BrokerCredential | None
) -> BrokerCredential | None:
    """The credential a subscription is about to use, locked and checked, for every path that
    attaches one (None for paper).

    The row is locked and read again, not trusted as the caller read it: credential_delete
    locks it too, so a delete and an attach are serialised. Whichever comes second sees the
    other's outcome: the delete sees the subscription (409), the attach sees the credential
    erased or gone (400), never a live subscription on destroyed keys. The caller's
    transaction holds the lock until it commits.
    """
    if mode == StrategySubscription.Mode.PAPER:
        return None
    if credential is None:
        raise ValidationError({"credential_id": "a live subscription needs a credential"})
    locked = (
        BrokerCredential.objects.select_for_update()
        .filter(pk=credential.pk)
        .exclude(secret_encrypted="")  # erased by a delete: as unknown as a missing one
        .first()
    )
    if locked is None:
        raise ValidationError({"credential_id": "unknown credential"})
    _validate_credential(user=user, strategy=strategy, credential=locked)
    return locked


def _validate_credential(*, user: User, strategy: Strategy, credential: BrokerCredential) -> None:
    if credential.user_id != user.pk:
        raise ValidationError({"credential_id": "unknown credential"})
    if credential.exchange != strategy.exchange:
        raise ValidationError(
            {
                "credential_id": f"credential is for {credential.exchange}, "
                f"the strategy trades on {strategy.exchange}"
            }
        )


def _refresh_subscriber_count(strategy_id: int) -> int:
    """Recount under the strategy's row lock; the caller holds it."""
    count = StrategySubscription.objects.filter(
        strategy_id=strategy_id, status=Status.ACTIVE
    ).count()
    Strategy.objects.filter(pk=strategy_id).update(subscriber_count=count)
    transaction.on_commit(lambda: strategy_registry_sync(strategy_id=strategy_id))
    return count


def _lock_strategy(strategy_id: int) -> Strategy:
    # Serialises every subscribe/cancel/pause of one strategy, so the recount is exact.
    return Strategy.objects.select_for_update().get(pk=strategy_id)


@transaction.atomic
def subscription_create(
    *,
    user: User,
    strategy: Strategy,
    capital: Decimal,
    risk_per_trade: Decimal,
    leverage: Decimal = Decimal("1"),
    mode: str = StrategySubscription.Mode.PAPER,
    credential: BrokerCredential | None = None,
    settings: dict[str, Any] | None = None,
    min_order_policy: str = StrategySubscription.MinOrderPolicy.SKIP,
    join_policy: str = StrategySubscription.JoinPolicy.NEXT_SIGNAL,
    entry_order_type: str = StrategySubscription.EntryOrderType.MARKET,
    margin_mode: str = "",
    protections: Mapping[str, Any] | None = None,
) -> StrategySubscription:
    """``protections``: the follower's guards (names in PROTECTION_FIELDS), off when left out."""
    sizing_validate(capital=capital, risk_per_trade=risk_per_trade, leverage=leverage)
    _validate_trading_policies(
        min_order_policy=min_order_policy,
        join_policy=join_policy,
        entry_order_type=entry_order_type,
        margin_mode=margin_mode,
    )
    # The credential's lock first, then the strategy's: the one order every path takes.
    credential = _credential_attach(user=user, strategy=strategy, mode=mode, credential=credential)
    strategy = _lock_strategy(strategy.pk)
    if strategy.status != Strategy.Status.ACTIVE:
        raise ValidationError(
            {"strategy": f"strategy is {strategy.status}, not open to subscribers"}
        )
    if (
        StrategySubscription.objects.filter(user=user, strategy=strategy)
        .exclude(status=Status.CANCELLED)
        .exists()
    ):
        raise ValidationError({"strategy": "you are already subscribed to this strategy"})
    subscription = StrategySubscription(
        user=user,
        strategy=strategy,
        capital=capital,
        risk_per_trade=risk_per_trade,
        leverage=leverage,
        mode=mode,
        credential=credential,
        settings=settings or {},
        min_order_policy=min_order_policy,
        join_policy=join_policy,
        entry_order_type=entry_order_type,
        margin_mode=margin_mode,
        equity_peak=capital,  # the curve starts at the capital
    )
    _protections_apply(subscription, protections)
    subscription.save(force_insert=True)
    _refresh_subscriber_count(strategy.pk)
    # The curve's first point, atomically with the subscription.
    equity_point_capital_change(
        subscription=subscription, previous=None, time=subscription.created_at
    )
    event_emit(
        EventType.SUBSCRIPTION_CREATED,
        subscription_id=subscription.pk,
        strategy_id=strategy.pk,
        user_id=user.pk,
    )
    return subscription


def _set_status(
    *, subscription: StrategySubscription, status: str, reason: str = ""
) -> StrategySubscription:
    _lock_strategy(subscription.strategy_id)
    locked = StrategySubscription.objects.select_for_update().get(pk=subscription.pk)
    if locked.status == Status.CANCELLED:
        raise ValidationError({"status": "subscription is cancelled"})
    locked.status, locked.status_reason = status, reason
    if status == Status.CANCELLED:
        locked.cancelled_at = timezone.now()
    locked.save(update_fields=["status", "status_reason", "cancelled_at", "updated_at"])
    _refresh_subscriber_count(locked.strategy_id)
    return locked


@transaction.atomic
def subscription_cancel(*, subscription: StrategySubscription) -> StrategySubscription:
    cancelled = _set_status(subscription=subscription, status=Status.CANCELLED)
    event_emit(
        EventType.SUBSCRIPTION_CANCELLED,
        subscription_id=cancelled.pk,
        strategy_id=cancelled.strategy_id,
        user_id=cancelled.user_id,
    )
    return cancelled


@transaction.atomic
def subscription_pause(
    *, subscription: StrategySubscription, reason: str = ""
) -> StrategySubscription:
    paused = _set_status(subscription=subscription, status=Status.PAUSED, reason=reason)
    notifications_record(notices=[_paused_notice(paused)])
    event_emit(
        EventType.SUBSCRIPTION_PAUSED,
        subscription_id=paused.pk,
        strategy_id=paused.strategy_id,
        reason=reason,
    )
    return paused


def _paused_notice(subscription: StrategySubscription) -> Notice:
    # Keyed by the moment it was paused: a subscription paused, resumed and paused again
    # is two notices.
    return Notice(
        user_id=subscription.user_id,
        event=NotificationEvent.SUBSCRIPTION_PAUSED,
        key=f"subscription.paused:{subscription.pk}:{subscription.updated_at.isoformat()}",
        payload={
            "subscription_id": subscription.pk,
            "strategy_id": subscription.strategy_id,
            "mode": subscription.mode,
            "reason": subscription.status_reason,
        },
    )


@transaction.atomic
def subscription_resume(*, subscription: StrategySubscription) -> StrategySubscription:
    if subscription.strategy.status != Strategy.Status.ACTIVE:
        raise ValidationError({"status": "the strategy is not active"})
    resumed = _set_status(subscription=subscription, status=Status.ACTIVE)
    _drawdown_rebase(resumed)
    event_emit(
        EventType.SUBSCRIPTION_RESUMED, subscription_id=resumed.pk, strategy_id=resumed.strategy_id
    )
    return resumed


def _drawdown_rebase(subscription: StrategySubscription) -> None:
    """Resumed as far below its peak as its maximum drawdown allows (the drawdown paused it,
    or it fell further while paused), a subscription would be paused again at its next
    equity point, its first fill: the follower who resumes it has seen the loss, so the
    drawdown is measured from the equity at the resume, as when the guard is turned on."""
    limit, peak = subscription.max_drawdown_pct, subscription.equity_peak
    if limit is None or peak is None or peak <= 0:
        return
    equity = _equity_now(subscription)
    if (peak - equity) / peak * 100 >= limit:
        subscription.equity_peak = equity
        subscription.save(update_fields=["equity_peak"])


@transaction.atomic
def subscription_update_settings(
    *,
    subscription: StrategySubscription,
    capital: Decimal | None = None,
    risk_per_trade: Decimal | None = None,
    leverage: Decimal | None = None,
    settings: dict[str, Any] | None = None,
    min_order_policy: str | None = None,
    join_policy: str | None = None,
    entry_order_type: str | None = None,
    margin_mode: str | None = None,
    protections: Mapping[str, Any] | None = None,
) -> StrategySubscription:
    """Fields given as None keep their values; in ``protections``, None turns one off and the
    protections left out keep their values."""
    policies = {
        "min_order_policy": min_order_policy,
        "join_policy": join_policy,
        "entry_order_type": entry_order_type,
        "margin_mode": margin_mode,
    }
    _validate_trading_policies(**policies)
    locked = StrategySubscription.objects.select_for_update().get(pk=subscription.pk)
    if locked.status == Status.CANCELLED:
        raise ValidationError({"status": "subscription is cancelled"})
    for name, value in policies.items():
        if value is not None:
            setattr(locked, name, value)
    previous = _sizing(locked)
    locked.capital = capital if capital is not None else locked.capital
    locked.risk_per_trade = risk_per_trade if risk_per_trade is not None else locked.risk_per_trade
    locked.leverage = leverage if leverage is not None else locked.leverage
    locked.settings = settings if settings is not None else locked.settings
    sizing_validate(
        capital=locked.capital, risk_per_trade=locked.risk_per_trade, leverage=locked.leverage
    )
    guarded = _protections_apply(locked, protections)
    locked.save(
        update_fields=[
            "capital",
            "risk_per_trade",
            "leverage",
            "settings",
            *policies,
            *guarded,
            "updated_at",
        ]
    )
    if _sizing(locked) != previous:
        # Atomically with the change: the curve never shows a capital that was not in force.
        point = equity_point_capital_change(
            subscription=locked, previous=previous, time=locked.updated_at
        )
        # A new capital is not a gain or a loss: the drawdown is measured from here on.
        locked.equity_peak = point.equity
        locked.save(update_fields=["equity_peak"])
    return locked


def credential_add(
    *,
    user: User,
    exchange: str,
    label: str,
    api_key: str,
    secret: str,
    passphrase: str = "",
    is_sandbox: bool = False,
) -> BrokerCredential:
    """What ``POST /api/credentials`` calls: the keys are tried on the exchange (one signed
    read-only request, see subscriptions.keycheck) before they are stored; refused or
    untried keys are a ValidationError with the exchange's reason, and nothing is stored."""
    _label_free(user=user, label=label)  # before asking the exchange anything
    check = credential_keys_check(
        exchange=exchange,
        api_key=api_key,
        secret=secret,
        passphrase=passphrase,
        is_sandbox=is_sandbox,
    )
    credential = credential_create(
        user=user,
        exchange=exchange,
        label=label,
        api_key=api_key,
        secret=secret,
        passphrase=passphrase,
        is_sandbox=is_sandbox,
    )
    credential.permissions, credential.key_warnings = check.permissions, check.warnings
    credential.key_note = check.note[:500]
    credential.permissions_checked_at = timezone.now() if check.checked else None
    credential.save(
        update_fields=["permissions", "key_warnings", "key_note", "permissions_checked_at"]
    )
    return credential


def _label_free(*, user: User, label: str) -> None:
    if BrokerCredential.objects.filter(user=user, label=label).exists():
        raise ValidationError({"label": "you already have a credential with this label"})


def credential_create(
    *,
    user: User,
    exchange: str,
    label: str,
    api_key: str,
    secret: str,
    passphrase: str = "",
    is_sandbox: bool = False,
) -> BrokerCredential:
    """Store keys, encrypted, as given: no exchange is asked (``credential_add`` asks
    first); for keys known to work, such as the simulator's accounts in demos and tests."""
    _label_free(user=user, label=label)
    return BrokerCredential.objects.create(
        user=user,
        exchange=exchange,
        label=label,
        is_sandbox=is_sandbox,
        api_key_encrypted=encrypt_secret(api_key),
        secret_encrypted=encrypt_secret(secret),
        passphrase_encrypted=encrypt_secret(passphrase) if passphrase else "",
        api_key_last4=api_key[-4:],
    )


class CredentialInUseError(Exception):
    """The credential still backs a live subscription (the API answers 409)."""


def _erase_credential(credential: BrokerCredential) -> None:
    # Cancelled subscriptions keep pointing at the row (history; PROTECT and the
    # live-needs-credential constraint), so the row stays but its secrets are destroyed, its
    # label is freed for reuse, and selectors stop listing it.
    credential.api_key_encrypted = ""
    credential.secret_encrypted = ""
    credential.passphrase_encrypted = ""
    credential.label = f"(deleted #{credential.pk})"
    credential.save(
        update_fields=["api_key_encrypted", "secret_encrypted", "passphrase_encrypted", "label"]
    )


@transaction.atomic
def credential_delete(*, credential: BrokerCredential) -> None:
    """Delete a credential, refused while an active or paused subscription uses it."""
    from django.db.models import ProtectedError

    locked = BrokerCredential.objects.select_for_update().get(pk=credential.pk)
    users = list(
        locked.subscriptions.exclude(status=Status.CANCELLED)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if users:
        raise CredentialInUseError(
            f"credential is used by live subscription(s) {', '.join(map(str, users))}; "
            "cancel them first"
        )
    if locked.subscriptions.exists():
        _erase_credential(locked)
        return
    try:
        with transaction.atomic():
            locked.delete()
    except ProtectedError as exc:  # a subscription appeared since the check
        raise CredentialInUseError("credential was just attached to a subscription") from exc


def credential_record_failures(*, errors: dict[int, str], pause: Collection[int]) -> list[int]:
    """Record the failures of requests made with these credentials (id -> error), in one
    UPDATE; the credentials in ``pause`` (the exchange refused the keys, or they cannot be
    decrypted) also get every active subscription paused, with the error as the reason, until
    their owner fixes them. Returns the ids of the subscriptions paused.

    Called by the loops that span tenants (fan-out, order sync, stale cancel) instead of
    letting one credential's failure escape them and stop everyone else's orders.
    """
    if not errors:
        return []
    BrokerCredential.objects.filter(pk__in=list(errors)).update(
        last_error=Case(
            *[When(pk=pk, then=Value(error[:2000])) for pk, error in errors.items()],
            output_field=TextField(),
        ),
        last_error_at=timezone.now(),
    )
    paused = []
    active = StrategySubscription.objects.filter(
        credential_id__in=list(pause), status=Status.ACTIVE
    )
    for subscription in active.order_by("pk"):
        assert subscription.credential_id is not None
        try:
            subscription_pause(
                subscription=subscription, reason=errors[subscription.credential_id][:255]
            )
        except ValidationError:  # cancelled meanwhile: nothing left to pause
            continue
        paused.append(subscription.pk)
    return paused


def credential_rotate_keys() -> int:
    """Re-encrypt every stored credential with the newest key (the first of
    CREDENTIALS_ENCRYPTION_KEYS), after which older keys can be dropped from the list.

    One row at a time, each under its own lock: a rotation can run while the platform trades.
    Returns how many credentials were re-encrypted.
    """
    rotated = 0
    stored = BrokerCredential.objects.exclude(secret_encrypted="").order_by("pk")
    for credential_id in stored.values_list("pk", flat=True):
        with transaction.atomic():
            locked = BrokerCredential.objects.select_for_update().get(pk=credential_id)
            try:
                locked.api_key_encrypted = rotate_secret(locked.api_key_encrypted)
                locked.secret_encrypted = rotate_secret(locked.secret_encrypted)
                if locked.passphrase_encrypted:
                    locked.passphrase_encrypted = rotate_secret(locked.passphrase_encrypted)
            except InvalidToken as exc:
                raise CredentialDecryptionError(
                    f"credential {credential_id} cannot be decrypted with the configured keys"
                ) from exc
            locked.save(
                update_fields=["api_key_encrypted", "secret_encrypted", "passphrase_encrypted"]
            )
        rotated += 1
    return rotated


@transaction.atomic
def strategy_retire(*, strategy: Strategy) -> Strategy:
    """Stop a strategy for good: its subscriptions are paused and it leaves the registry."""
    retired = strategy_mark_retired(strategy=strategy)
    for subscription in retired.subscriptions.filter(status=StrategySubscription.Status.ACTIVE):
        subscription_pause(subscription=subscription, reason="strategy retired")
    return retired
