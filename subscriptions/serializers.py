from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.db import models
from rest_framework import serializers

from core.api import DecimalInputField, JSONObjectField, StrictFieldsMixin
from strategies.serializers import exchange_field
from subscriptions.models import (
    MONEY,
    PERCENT,
    PROTECTION_FIELDS,
    BrokerCredential,
    StrategySubscription,
)
from subscriptions.services import (
    MAX_CAPITAL,
    MAX_COOLDOWN_LOSSES,
    MAX_COOLDOWN_MINUTES,
    MAX_OPEN_TRADES,
    MAX_RISK_PER_TRADE,
    MAX_SLIPPAGE_CAP_BPS,
)

# Input precision matches the columns, so oversize input is a 400 and never a database error.
CAPITAL = MONEY
RISK: dict[str, Any] = {"max_digits": 6, "decimal_places": 5}
LEVERAGE: dict[str, Any] = {"max_digits": 6, "decimal_places": 2}
Mode = StrategySubscription.Mode
Sub = StrategySubscription


# MAX_CAPITAL: a trillion is beyond any one subscriber; the bound keeps every accepted value
# exact on every database (SQLite stores decimals as floats and cannot round-trip 24 digits).


def _capital(**kwargs: Any) -> DecimalInputField:
    return DecimalInputField(
        **CAPITAL,
        greater_than=Decimal(0),
        max_value=MAX_CAPITAL,
        help_text=f"Greater than 0, at most {MAX_CAPITAL:,}.",
        **kwargs,
    )


def _risk(**kwargs: Any) -> DecimalInputField:
    return DecimalInputField(
        **RISK,
        greater_than=Decimal(0),
        max_value=MAX_RISK_PER_TRADE,
        help_text=f"Fraction of capital risked per trade, in (0, {MAX_RISK_PER_TRADE}].",
        **kwargs,
    )


def _leverage(**kwargs: Any) -> DecimalInputField:
    # The platform maximum is read when the process starts (MAX_LEVERAGE); the service
    # checks it again at write time.
    return DecimalInputField(
        **LEVERAGE,
        min_value=Decimal(1),
        max_value=Decimal(django_settings.MAX_LEVERAGE),
        help_text=f"From 1 to the platform maximum ({django_settings.MAX_LEVERAGE}).",
        **kwargs,
    )


def _policy(name: str, **kwargs: Any) -> serializers.ChoiceField:
    """A choice field for one of the live-trading policies, documented from its model field."""
    field = StrategySubscription._meta.get_field(name)
    assert isinstance(field, models.CharField)  # a policy is a column, never a relation
    return serializers.ChoiceField(
        choices=field.choices or (),
        allow_blank=field.blank,
        help_text=str(field.help_text),
        **kwargs,
    )


def _help(name: str) -> str:
    field = StrategySubscription._meta.get_field(name)
    assert isinstance(field, models.Field)  # a column
    return str(field.help_text)


class ProtectionsMixin(serializers.Serializer):
    """The follower's protections: each optional, null (or left out when subscribing) is off."""

    max_drawdown_pct = DecimalInputField(
        **PERCENT,
        greater_than=Decimal(0),
        max_value=Decimal(100),
        allow_null=True,
        required=False,
        help_text=f"In percent, in (0, 100]. {_help('max_drawdown_pct')}",
    )
    close_on_max_drawdown = serializers.BooleanField(
        required=False, help_text=_help("close_on_max_drawdown")
    )
    daily_loss_limit_pct = DecimalInputField(
        **PERCENT,
        greater_than=Decimal(0),
        max_value=Decimal(100),
        allow_null=True,
        required=False,
        help_text=f"In percent of the capital, in (0, 100]. {_help('daily_loss_limit_pct')}",
    )
    max_order_notional = DecimalInputField(
        **CAPITAL,
        greater_than=Decimal(0),
        max_value=MAX_CAPITAL,
        allow_null=True,
        required=False,
        help_text=_help("max_order_notional"),
    )
    max_open_trades = serializers.IntegerField(
        min_value=1,
        max_value=MAX_OPEN_TRADES,
        allow_null=True,
        required=False,
        help_text=_help("max_open_trades"),
    )
    cooldown_after_losses = serializers.IntegerField(
        min_value=1,
        max_value=MAX_COOLDOWN_LOSSES,
        allow_null=True,
        required=False,
        help_text=f"{_help('cooldown_after_losses')} Set both, or neither.",
    )
    cooldown_minutes = serializers.IntegerField(
        min_value=1,
        max_value=MAX_COOLDOWN_MINUTES,
        allow_null=True,
        required=False,
        help_text=f"How long entries pause after the losses in a row, at most "
        f"{MAX_COOLDOWN_MINUTES} (30 days).",
    )
    slippage_cap_bps = serializers.IntegerField(
        min_value=1,
        max_value=MAX_SLIPPAGE_CAP_BPS,
        allow_null=True,
        required=False,
        help_text=f"In basis points (100 = 1 %), at most {MAX_SLIPPAGE_CAP_BPS}. "
        f"{_help('slippage_cap_bps')}",
    )


def protections_pop(fields: dict[str, Any]) -> dict[str, Any]:
    """Take the protections given out of validated data (the service takes them apart)."""
    return {name: fields.pop(name) for name in PROTECTION_FIELDS if name in fields}


class SubscribeSerializer(StrictFieldsMixin, ProtectionsMixin, serializers.Serializer):
    mode = serializers.ChoiceField(choices=Mode.choices, default=Mode.PAPER)
    capital = _capital()
    risk_per_trade = _risk()
    leverage = _leverage(default=Decimal(1))
    credential_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=2**63 - 1,
        help_text="Live only, and required there: one of your credentials, for the "
        "strategy's exchange.",
    )
    settings = JSONObjectField(
        required=False, default=dict, help_text="Your own settings for this subscription."
    )
    min_order_policy = _policy("min_order_policy", default=Sub.MinOrderPolicy.SKIP)
    join_policy = _policy("join_policy", default=Sub.JoinPolicy.NEXT_SIGNAL)
    entry_order_type = _policy("entry_order_type", default=Sub.EntryOrderType.MARKET)
    margin_mode = _policy("margin_mode", default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        credential_id = attrs.get("credential_id")
        if attrs["mode"] == Mode.LIVE and credential_id is None:
            raise serializers.ValidationError(
                {"credential_id": "A live subscription needs one of your credentials."}
            )
        if attrs["mode"] == Mode.PAPER and credential_id is not None:
            raise serializers.ValidationError(
                {"credential_id": "Paper subscriptions trade without a credential."}
            )
        return attrs


class SubscriptionUpdateSerializer(StrictFieldsMixin, ProtectionsMixin, serializers.Serializer):
    """Sizing, own settings, trading policies and protections; the fields left out keep their
    values (a protection set to null is turned off)."""

    capital = _capital(required=False)
    risk_per_trade = _risk(required=False)
    leverage = _leverage(required=False)
    settings = JSONObjectField(required=False, help_text="Replaces your own settings.")
    min_order_policy = _policy("min_order_policy", required=False)
    join_policy = _policy("join_policy", required=False)
    entry_order_type = _policy("entry_order_type", required=False)
    margin_mode = _policy("margin_mode", required=False)


class SubscriptionSerializer(serializers.ModelSerializer):
    strategy_id = serializers.IntegerField(read_only=True)
    strategy_name = serializers.CharField(source="strategy.name", read_only=True)
    credential_id = serializers.IntegerField(read_only=True, allow_null=True)
    settings = JSONObjectField(read_only=True)
    # Declared: DRF drops allow_blank from a read-only model field, and the schema must say
    # that blank (the account's own setting) is an answer too.
    margin_mode = _policy("margin_mode", read_only=True)

    class Meta:
        model = StrategySubscription
        fields: tuple[str, ...] = (
            "id",
            "strategy_id",
            "strategy_name",
            "mode",
            "capital",
            "risk_per_trade",
            "leverage",
            "credential_id",
            "settings",
            "min_order_policy",
            "join_policy",
            "entry_order_type",
            "margin_mode",
            *PROTECTION_FIELDS,
            "status",
            "status_reason",
            "realized_pnl",
            "fees_paid",
            "created_at",
            "updated_at",
            "cancelled_at",
        )
        read_only_fields: tuple[str, ...] = fields


class CredentialCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    exchange = exchange_field(allow_paper=False, help_text="A ccxt exchange id.")
    label = serializers.CharField(  # type: ignore[assignment]  # a field, as DRF allows
        max_length=100, help_text="Your name for it; unique per user."
    )
    api_key = serializers.CharField(
        min_length=8, max_length=512, write_only=True, help_text="Stored encrypted."
    )
    secret = serializers.CharField(
        min_length=1, max_length=1024, write_only=True, help_text="Stored encrypted."
    )
    passphrase = serializers.CharField(
        max_length=256,
        required=False,
        allow_blank=True,
        default="",
        write_only=True,
        help_text="Only for exchanges that use one; stored encrypted.",
    )
    is_sandbox = serializers.BooleanField(default=False, help_text="The exchange's testnet.")


class CredentialSerializer(serializers.ModelSerializer):
    """What a client sees of a credential: never the secret, at most the key's last 4."""

    api_key_masked = serializers.CharField(source="masked_api_key", read_only=True)
    permissions = serializers.DictField(
        child=serializers.BooleanField(),
        read_only=True,
        help_text="What the exchange says the key may do (Binance's apiRestrictions), as last "
        "checked; empty where the exchange does not expose it (see key_note).",
    )
    key_warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="What to fix about the key, e.g. no IP restriction.",
    )

    class Meta:
        model = BrokerCredential
        fields = (
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
        )
        read_only_fields = fields


class StrategyStatsSerializer(serializers.Serializer):
    strategy_id = serializers.IntegerField()
    executions_total = serializers.IntegerField()
    executions_by_status = serializers.DictField(child=serializers.IntegerField())
    average_duration_ms = serializers.FloatField(allow_null=True)
    drift_p50_ms = serializers.FloatField(allow_null=True)
    drift_p95_ms = serializers.FloatField(allow_null=True)
    drift_p99_ms = serializers.FloatField(allow_null=True)
    drift_sample_size = serializers.IntegerField(
        help_text="Executions the percentiles are computed over (the most recent ones)."
    )
    active_subscribers = serializers.IntegerField()
    paused_subscribers = serializers.IntegerField()
    trades_generated = serializers.IntegerField()
    currency = serializers.CharField(help_text="Of every money figure: the market's quote.")
    subscribers_realized_pnl = serializers.DecimalField(max_digits=40, decimal_places=8)
    subscribers_fees = serializers.DecimalField(max_digits=40, decimal_places=8)
    subscribers_realized_return_pct = serializers.DecimalField(
        max_digits=40,
        decimal_places=4,
        allow_null=True,
        help_text="Their realized PnL over their capital, in percent (12.5 means 12.5 %).",
    )
