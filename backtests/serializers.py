"""Backtest requests and answers: what a client sends to start one and what it reads back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backtests.models import Backtest, BacktestTrade
from backtests.selectors import backtest_quote, backtest_series
from backtests.services import MAX_BPS
from core.api import DecimalInputField, JSONObjectField, StrictFieldsMixin
from strategies.serializers import RESOLUTIONS, exchange_field
from strategies.services import SYMBOL_RE
from subscriptions.serializers import _capital, _leverage, _risk

Method = Backtest.Method
# Defaults of the backtest command too: one unit of the quote currency (1 BTC on ETH/BTC);
# returns are in percent, so the capital only matters against a market's minimums.
DEFAULT_CAPITAL = Decimal("1")
DEFAULT_RISK = Decimal("0.01")
# Input precision matches the columns, so oversize input is a 400 and never a database error.
BPS: dict[str, Any] = {"max_digits": 8, "decimal_places": 3}
# Candle stores start after 1970 (times are milliseconds since then); the bounds keep every
# accepted time, rounded to a candle boundary, inside the calendar.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
SKIPS_SHOWN = 100
TRACEBACK = "\nTraceback"


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with its zone, turned into UTC: a naive time would be read in some zone."""

    default_error_messages = {
        "naive": "Give the time with its zone, e.g. 2024-01-01T00:00:00Z (times are UTC).",
        "range": f"Give a time between {EARLIEST:%Y} and {LATEST:%Y}.",
    }

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            self.fail("naive")
        moment = super().enforce_timezone(value)
        if not EARLIEST <= moment < LATEST:
            self.fail("range")
        return moment


def _bps(name: str) -> DecimalInputField:
    return DecimalInputField(
        **BPS,
        min_value=Decimal(0),
        max_value=MAX_BPS,
        required=False,
        help_text=f"Basis points per fill, 0 to {MAX_BPS}; default: the paper {name}.",
    )


class BacktestCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    """A published strategy (``strategy``) or code on a market (``code`` and the market)."""

    strategy = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="A strategy you may see (yours or a public one); its code and settings "
        "are used as they are now, and never shown.",
    )
    code = serializers.CharField(
        required=False,
        max_length=200_000,
        trim_whitespace=False,
        help_text="Instead of a strategy: Python source defining generate_signal(candles, "
        "settings) (and generate_signals for the vectorised method).",
    )
    exchange = exchange_field(allow_paper=True, required=False, help_text="With `code`.")
    symbol = serializers.RegexField(
        SYMBOL_RE.pattern,
        max_length=50,
        required=False,
        help_text="With `code`: a ccxt unified symbol, e.g. `ETH/BTC`.",
        error_messages={"invalid": 'Not a ccxt unified symbol such as "ETH/BTC".'},
    )
    resolution = serializers.ChoiceField(
        choices=RESOLUTIONS, required=False, help_text="With `code`."
    )
    settings = JSONObjectField(required=False, help_text="With `code`: its settings.")
    start = AwareDateTimeField(
        required=False, help_text="Default: the first stored candle of the market."
    )
    end = AwareDateTimeField(
        required=False, help_text="Default: the close of the last stored candle."
    )
    capital = _capital(required=False, default=DEFAULT_CAPITAL)
    risk_per_trade = _risk(required=False, default=DEFAULT_RISK)
    leverage = _leverage(required=False, default=Decimal(1))
    fee_bps = _bps("trading fee")
    slippage_bps = _bps("slippage")
    method = serializers.ChoiceField(choices=Method.choices, default=Method.PER_CANDLE)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("strategy" in attrs) == ("code" in attrs):
            raise serializers.ValidationError(
                {"strategy": "Give either a strategy or code (with its market), not both."}
            )
        market = ("exchange", "symbol", "resolution")
        if "strategy" in attrs:
            given = [name for name in (*market, "settings") if name in attrs]
            raise_for(given, "A strategy is tested on its own market with its own settings.")
        else:
            missing = [name for name in market if name not in attrs]
            raise_for(missing, "Required with code.")
        return attrs


def raise_for(names: list[str], message: str) -> None:
    if names:
        raise serializers.ValidationError({name: message for name in names})


# --- answers ---------------------------------------------------------------------------------
def _money(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=40, decimal_places=8, read_only=True, **kwargs)


class BacktestPeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="Open time of the first traded candle.")
    end = serializers.DateTimeField(help_text="Close time of the last traded candle.")
    lookback = serializers.IntegerField(
        help_text="Candles the strategy reads before its first signal (LOOKBACK)."
    )


class BacktestSizingSerializer(serializers.Serializer):
    capital = _money(help_text="In the market's quote currency (`currency`).")
    risk_per_trade = serializers.DecimalField(max_digits=6, decimal_places=5)
    leverage = serializers.DecimalField(max_digits=6, decimal_places=2)


class BacktestCostsSerializer(serializers.Serializer):
    fee_bps = serializers.DecimalField(max_digits=8, decimal_places=3)
    slippage_bps = serializers.DecimalField(max_digits=8, decimal_places=3)


class BacktestTradeSerializer(serializers.ModelSerializer):
    class Meta:
        model = BacktestTrade
        fields = (
            "side",
            "quantity",
            "entry_time",
            "entry_price",
            "entry_fee",
            "stop_loss",
            "take_profit",
            "exit_time",
            "exit_price",
            "exit_fee",
            "pnl",
            "exit_reason",
        )
        read_only_fields = fields


class BacktestGapSerializer(serializers.Serializer):
    after = serializers.DateTimeField(help_text="The close of the last candle before it.")
    before = serializers.DateTimeField(help_text="The open of the first candle after it.")
    missing = serializers.IntegerField()


class BacktestSkipSerializer(serializers.Serializer):
    time = serializers.DateTimeField(help_text="The close at which the signal came.")
    signal = serializers.CharField()
    reason = serializers.CharField()


class BacktestEquitySerializer(serializers.Serializer):
    times = serializers.ListField(child=serializers.DateTimeField(), help_text="Each close.")
    equity = serializers.ListField(
        child=serializers.DecimalField(max_digits=40, decimal_places=8),
        help_text="Capital + realized PnL + the open position valued at that close.",
    )


class BacktestResultSerializer(serializers.Serializer):
    metrics = JSONObjectField(
        help_text="Returns, drawdown, ratios, trade counts, fees; `warnings` lists what "
        "makes the result less trustworthy."
    )
    trades = BacktestTradeSerializer(many=True)
    gaps = BacktestGapSerializer(many=True, help_text="Missing candles in the period.")
    lookahead = JSONObjectField(
        allow_null=True, help_text="Vectorised only: the look-ahead check, what it compared."
    )
    skips = BacktestSkipSerializer(many=True, help_text=f"The first {SKIPS_SHOWN} skipped signals.")
    skips_total = serializers.IntegerField()
    equity = BacktestEquitySerializer(allow_null=True, help_text="Null with `?series=false`.")


class BacktestSerializer(serializers.ModelSerializer):
    """A backtest as listed: what was asked and how far it got."""

    strategy = serializers.IntegerField(source="strategy_id", read_only=True, allow_null=True)
    settings = JSONObjectField(source="strategy_settings", read_only=True)
    currency = serializers.SerializerMethodField(help_text="The market's quote currency.")
    progress = serializers.SerializerMethodField(help_text="From 0 to 1; 1 once done.")
    error = serializers.SerializerMethodField()
    period = BacktestPeriodSerializer(source="*", read_only=True)
    sizing = BacktestSizingSerializer(source="*", read_only=True)
    costs = BacktestCostsSerializer(source="*", read_only=True)

    class Meta:
        model = Backtest
        fields: tuple[str, ...] = (
            "id",
            "status",
            "progress",
            "candles_total",
            "candles_done",
            "error",
            "strategy",
            "code_version",
            "exchange",
            "symbol",
            "resolution",
            "settings",
            "currency",
            "period",
            "sizing",
            "costs",
            "method",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_progress(self, backtest: Backtest) -> float:
        # Done is whole even when the period's first candles went to the warm-up: those count
        # in candles_total but are never traded (the result's warnings say so).
        return 1.0 if backtest.status == Backtest.Status.DONE else backtest.progress

    def get_currency(self, backtest: Backtest) -> str:
        return backtest_quote(backtest=backtest)

    @extend_schema_field(serializers.CharField(help_text="Why it failed; blank otherwise."))
    def get_error(self, backtest: Backtest) -> str:
        # A traceback quotes the strategy's source lines: only for code that is the user's.
        if _code_is_the_users(backtest):
            return backtest.error
        return backtest.error.split(TRACEBACK, 1)[0]


def _code_is_the_users(backtest: Backtest) -> bool:
    """Code sent with the request, or a strategy of the user's own."""
    if backtest.strategy is None:
        return bool(backtest.code)
    return backtest.strategy.owner_id == backtest.owner_id


class BacktestDetailSerializer(BacktestSerializer):
    """One backtest, with its result once it is done."""

    # context["series"] False leaves the equity series out (``?series=false``).
    code = serializers.SerializerMethodField()
    logs = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    class Meta(BacktestSerializer.Meta):
        fields = (*BacktestSerializer.Meta.fields, "sandbox_isolation", "code", "logs", "result")
        read_only_fields = fields

    @extend_schema_field(
        serializers.CharField(
            allow_null=True, help_text="The code you sent; null for a strategy's backtest."
        )
    )
    def get_code(self, backtest: Backtest) -> str | None:
        # Only code sent with the request is stored; a strategy's code is never shown.
        return backtest.code if backtest.strategy_id is None and backtest.code else None

    @extend_schema_field(
        serializers.CharField(
            allow_null=True, help_text="What your code printed (capped); null otherwise."
        )
    )
    def get_logs(self, backtest: Backtest) -> str | None:
        return backtest.logs if _code_is_the_users(backtest) else None

    @extend_schema_field(BacktestResultSerializer(allow_null=True, help_text="Null until done."))
    def get_result(self, backtest: Backtest) -> dict[str, Any] | None:
        if backtest.status != Backtest.Status.DONE:
            return None
        result = {
            "metrics": backtest.metrics,
            "trades": backtest.trades.all(),
            "gaps": backtest.gaps,
            "lookahead": backtest.lookahead or None,
            "skips": (backtest.skips or [])[:SKIPS_SHOWN],
            "skips_total": backtest.metrics.get("skipped_signals", len(backtest.skips or [])),
            "equity": _equity(backtest) if self.context.get("series", True) else None,
        }
        return dict(BacktestResultSerializer(result).data)


def _equity(backtest: Backtest) -> dict[str, list[Any]]:
    series = backtest_series(backtest=backtest)
    return {"times": series.times, "equity": series.equity}
