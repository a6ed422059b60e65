from __future__ import annotations

from typing import Any

import ccxt
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import JSONObjectField, StrictFieldsMixin
from core.time_utils import CANONICAL_RESOLUTIONS
from strategies.models import Strategy, StrategyExecution
from strategies.services import SYMBOL_RE

RESOLUTIONS = list(CANONICAL_RESOLUTIONS)
# The same list strategies.services.exchange_is_known checks; as choices it is also the
# enum the OpenAPI schema documents.
CCXT_EXCHANGES = sorted(ccxt.exchanges)
EXCHANGES = ["paper", *CCXT_EXCHANGES]


def exchange_field(*, allow_paper: bool, **kwargs: Any) -> serializers.ChoiceField:
    hint = 'a ccxt exchange id or "paper"' if allow_paper else "a ccxt exchange id"
    return serializers.ChoiceField(
        choices=EXCHANGES if allow_paper else CCXT_EXCHANGES,
        error_messages={"invalid_choice": f'Unknown exchange "{{input}}": use {hint}.'},
        **kwargs,
    )


class StrategyDeploySerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(max_length=10_000, allow_blank=True, default="")
    code = serializers.CharField(
        max_length=200_000,
        trim_whitespace=False,
        help_text="Python source defining generate_signal(candles, settings).",
    )
    exchange = exchange_field(allow_paper=True, help_text="A ccxt exchange id, or `paper`.")
    symbol = serializers.RegexField(
        SYMBOL_RE.pattern,
        max_length=50,
        help_text="ccxt unified symbol, e.g. `ETH/BTC` (or `BTC/USDT:USDT` for a swap).",
        error_messages={"invalid": 'Not a ccxt unified symbol such as "ETH/BTC".'},
    )
    resolution = serializers.ChoiceField(
        choices=RESOLUTIONS, help_text="Candle resolution the strategy runs on."
    )
    settings = JSONObjectField(default=dict)
    is_public = serializers.BooleanField(default=False)
    is_marketplace = serializers.BooleanField(default=False)


class StrategyCodeSerializer(StrictFieldsMixin, serializers.Serializer):
    code = serializers.CharField(
        max_length=200_000,
        trim_whitespace=False,
        help_text="The new Python source defining generate_signal(candles, settings).",
    )


class StrategySettingsSerializer(StrictFieldsMixin, serializers.Serializer):
    settings = JSONObjectField(help_text="Replaces the strategy's settings as a whole.")


class StrategySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    is_owner = serializers.SerializerMethodField()
    code = serializers.SerializerMethodField()
    settings = JSONObjectField(read_only=True)

    class Meta:
        model = Strategy
        fields = (
            "id",
            "owner",
            "is_owner",
            "name",
            "description",
            "code",
            "code_version",
            "lookback",
            "exchange",
            "symbol",
            "resolution",
            "settings",
            "settings_version",
            "is_public",
            "is_marketplace",
            "status",
            "subscriber_count",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    def _viewer_id(self) -> int | None:
        request = self.context.get("request")
        return getattr(getattr(request, "user", None), "pk", None)

    def get_is_owner(self, strategy: Strategy) -> bool:
        return strategy.owner_id == self._viewer_id()

    @extend_schema_field(
        serializers.CharField(allow_null=True, help_text="Null unless you own the strategy.")
    )
    def get_code(self, strategy: Strategy) -> str | None:
        # Another user's code is never shown, not even for a public strategy.
        return strategy.code if self.get_is_owner(strategy) else None


class ExecutionSerializer(serializers.ModelSerializer):
    signal = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = StrategyExecution
        fields = (
            "id",
            "interval_start",
            "interval_end",
            "trigger",
            "status",
            "signal",
            "error",
            "started_at",
            "finished_at",
            "duration_ms",
            "drift_ms",
            "attempts",
            "settings_version",
            "code_version",
            "candles_used",
            "close_price",
            "subscriber_count",
            "trades_generated",
        )
        read_only_fields = fields
