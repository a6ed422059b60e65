from __future__ import annotations

from rest_framework import serializers

from trades.models import Trade


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
