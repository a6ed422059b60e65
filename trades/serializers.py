from __future__ import annotations

from rest_framework import serializers

from trades.models import Order, Position, Trade


class TradeSerializer(serializers.ModelSerializer):
    execution_id = serializers.IntegerField(read_only=True)
    exit_execution_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Trade
        fields = (
            "id",
            "execution_id",
            "exit_execution_id",
            "symbol",
            "side",
            "status",
            "quantity",
            "entry_price",
            "entry_time",
            "exit_price",
            "exit_time",
            "stop_loss",
            "take_profit",
            "entry_fee",
            "exit_fee",
            "pnl",
            "client_order_id",
            "error",
            "created_at",
        )
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    """An order intent and its life on the exchange (amounts in the market's base currency)."""

    trade_id = serializers.IntegerField(read_only=True)
    execution_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Order
        fields = (
            "id",
            "trade_id",
            "execution_id",
            "purpose",
            "client_order_id",
            "exchange_order_id",
            "symbol",
            "side",
            "type",
            "amount",
            "price",
            "reduce_only",
            "status",
            "filled",
            "average_price",
            "fee",
            "fee_currency",
            "error",
            "attempts",
            "created_at",
            "sent_at",
            "acknowledged_at",
            "closed_at",
            "updated_at",
        )
        read_only_fields = fields
        extra_kwargs = {
            "purpose": {
                "help_text": "`entry`; `exit:<trade id>` for a trade's exit; `stop:<trade id>` "
                "and `take:<trade id>` for its stop loss and take profit on the exchange."
            },
            "side": {"help_text": "`buy` or `sell`."},
            "type": {
                "help_text": "`market`, `limit`, or `stop`/`take` for a stop loss/take profit."
            },
            "price": {
                "help_text": "The limit price (a stop's or take profit's trigger price); null for "
                "a market order."
            },
            "average_price": {"help_text": "Average price of the fills so far."},
            "error": {"help_text": "Why it was rejected, skipped or cancelled, if it was."},
            "attempts": {"help_text": "Times it was sent to the exchange."},
        }


class PositionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Position
        fields = (
            "symbol",
            "side",
            "quantity",
            "average_entry_price",
            "realized_pnl",
            "unrealized_pnl",
            "open_fees",
            "fees_paid",
            "mark_price",
            "updated_at",
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
    position = PositionSerializer(
        allow_null=True,
        help_text="The net position kept in step with the exchange's fills; null before the "
        "first fill.",
    )
