"""The track record's figures as the listing shows them on each strategy."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backtests.models import StrategyRecord
from strategies.models import Strategy
from strategies.serializers import StrategySerializer


class RecordFiguresSerializer(serializers.ModelSerializer):
    """Percentages are percentages (12.5 means 12.5 %); Sharpe is annualised."""

    return_7d_pct = serializers.DecimalField(max_digits=20, decimal_places=4, allow_null=True)
    return_30d_pct = serializers.DecimalField(max_digits=20, decimal_places=4, allow_null=True)
    return_90d_pct = serializers.DecimalField(max_digits=20, decimal_places=4, allow_null=True)
    return_total_pct = serializers.DecimalField(max_digits=20, decimal_places=4, allow_null=True)
    max_drawdown_pct = serializers.DecimalField(max_digits=20, decimal_places=4, allow_null=True)
    win_rate_pct = serializers.DecimalField(max_digits=8, decimal_places=4, allow_null=True)

    class Meta:
        model = StrategyRecord
        fields = (
            "return_7d_pct",
            "return_30d_pct",
            "return_90d_pct",
            "return_total_pct",
            "max_drawdown_pct",
            "sharpe",
            "win_rate_pct",
            "trades",
            "subscribers",
            "started_at",
            "last_close",
            "figures_at",
        )
        read_only_fields = fields


class StrategyWithRecordSerializer(StrategySerializer):
    performance = serializers.SerializerMethodField()

    class Meta(StrategySerializer.Meta):
        # The parent's fields plus one: mypy reads the parent's as a fixed-length tuple.
        fields = (*StrategySerializer.Meta.fields, "performance")  # type: ignore[assignment]
        read_only_fields = fields  # type: ignore[assignment]

    @extend_schema_field(RecordFiguresSerializer(allow_null=True))
    def get_performance(self, strategy: Strategy) -> dict[str, Any] | None:
        record = getattr(strategy, "record", None)
        return None if record is None else RecordFiguresSerializer(record).data
