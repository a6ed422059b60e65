from __future__ import annotations

from rest_framework import serializers

from config.api import DecimalInputField, StrictFieldsMixin
from strategies.services import exchange_is_known
from subscriptions.models import MONEY, BrokerCredential, StrategySubscription

# Input precision matches the columns, so oversize input is a 400 and never a database error.
CAPITAL = MONEY
RISK = {"max_digits": 6, "decimal_places": 5}
LEVERAGE = {"max_digits": 6, "decimal_places": 2}


class SubscribeSerializer(StrictFieldsMixin, serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=StrategySubscription.Mode.choices, default=StrategySubscription.Mode.PAPER
    )
    capital = DecimalInputField(**CAPITAL, help_text="Greater than 0.")
    risk_per_trade = DecimalInputField(
        **RISK, help_text="Fraction of capital risked per trade, in (0, 0.1]."
    )
    leverage = DecimalInputField(
        **LEVERAGE, required=False, help_text="From 1 to the platform maximum (default 20)."
    )
    credential_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="Required for live: one of your credentials, for the strategy's exchange.",
    )


class SubscriptionUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    """Sizing only; the fields left out keep their values."""

    capital = DecimalInputField(**CAPITAL, required=False)
    risk_per_trade = DecimalInputField(**RISK, required=False)
    leverage = DecimalInputField(**LEVERAGE, required=False)


class SubscriptionSerializer(serializers.ModelSerializer):
    strategy_id = serializers.IntegerField(read_only=True)
    strategy_name = serializers.CharField(source="strategy.name", read_only=True)
    credential_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = StrategySubscription
        fields = (
            "id",
            "strategy_id",
            "strategy_name",
            "mode",
            "capital",
            "risk_per_trade",
            "leverage",
            "credential_id",
            "status",
            "status_reason",
            "realized_pnl",
            "fees_paid",
            "created_at",
            "updated_at",
            "cancelled_at",
        )
        read_only_fields = fields


class OpenPositionSerializer(serializers.Serializer):
    trade_id = serializers.IntegerField()
    side = serializers.CharField()
    symbol = serializers.CharField()
    quantity = serializers.DecimalField(max_digits=30, decimal_places=12)
    entry_price = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True)
    entry_time = serializers.DateTimeField(allow_null=True)
    stop_loss = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True)
    take_profit = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True)


class SubscriptionStatsSerializer(serializers.Serializer):
    subscription_id = serializers.IntegerField()
    trades = serializers.IntegerField(help_text="Trades that reached the market.")
    closed_trades = serializers.IntegerField()
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True, help_text="wins / closed trades.")
    realized_pnl = serializers.DecimalField(max_digits=40, decimal_places=8)
    fees = serializers.DecimalField(max_digits=40, decimal_places=8)
    return_on_capital = serializers.FloatField(help_text="realized_pnl / capital.")
    max_drawdown = serializers.DecimalField(
        max_digits=40, decimal_places=8, help_text="Largest peak-to-trough fall of equity."
    )
    max_drawdown_pct = serializers.FloatField(help_text="The same, as a fraction of the peak.")
    open_position = OpenPositionSerializer(allow_null=True)


class CredentialCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    exchange = serializers.CharField(max_length=50, help_text="A ccxt exchange id, or 'paper'.")
    label = serializers.CharField(max_length=100)
    api_key = serializers.CharField(min_length=8, max_length=512, write_only=True)
    secret = serializers.CharField(min_length=1, max_length=1024, write_only=True)
    passphrase = serializers.CharField(
        max_length=256, required=False, allow_blank=True, default="", write_only=True
    )
    is_sandbox = serializers.BooleanField(default=False)

    def validate_exchange(self, value: str) -> str:
        if not exchange_is_known(value):
            raise serializers.ValidationError(
                f"unknown exchange {value!r}: use a ccxt exchange id or 'paper'"
            )
        return value


class CredentialSerializer(serializers.ModelSerializer):
    """What a client sees of a credential: never the secret, at most the key's last 4."""

    api_key_masked = serializers.CharField(source="masked_api_key", read_only=True)

    class Meta:
        model = BrokerCredential
        fields = ("id", "exchange", "label", "api_key_masked", "is_sandbox", "created_at")
        read_only_fields = fields
