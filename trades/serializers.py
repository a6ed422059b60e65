from __future__ import annotations

from rest_framework import serializers

from core.api import StrictFieldsMixin
from markets.symbols import symbol_quote
from subscriptions.serializers import StrategyStatsSerializer, SubscriptionSerializer
from trades.models import Divergence, Order, Position, ProtectionTrip, Trade


class QuoteCurrencyField(serializers.CharField):
    """The currency of a row's prices, fees and PnL: its market's quote, read off its symbol."""

    def __init__(self) -> None:
        super().__init__(
            source="symbol",
            read_only=True,
            help_text="Of the prices, fees and PnL: the market's quote currency.",
        )

    def to_representation(self, value: str) -> str:
        return symbol_quote(value)


class TradeSerializer(serializers.ModelSerializer):
    execution_id = serializers.IntegerField(read_only=True)
    exit_execution_id = serializers.IntegerField(read_only=True, allow_null=True)
    currency = QuoteCurrencyField()

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
            "currency",
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
                "and `take:<trade id>` for its stop loss and take profit on the exchange; "
                "`close:<trade id>` for its close outside the strategy (by hand, or by the "
                "maximum drawdown)."
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
    currency = QuoteCurrencyField()

    class Meta:
        model = Position
        fields = (
            "symbol",
            "currency",
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


class DivergenceSummarySerializer(serializers.Serializer):
    fills = serializers.IntegerField(help_text="Fills that followed a signal.")
    slippage_bps_avg = serializers.DecimalField(
        max_digits=20,
        decimal_places=2,
        allow_null=True,
        help_text="Signed against the follower: above zero the fills cost you against the "
        "signal's price.",
    )
    slippage_bps_max = serializers.DecimalField(max_digits=20, decimal_places=2, allow_null=True)
    latency_ms_avg = serializers.FloatField(allow_null=True, help_text="Signal to fill.")
    latency_ms_p50 = serializers.FloatField(allow_null=True)
    latency_ms_max = serializers.FloatField(allow_null=True)
    signals_missed = serializers.IntegerField(
        help_text="Entries you did not get: skipped, rejected, failed or cancelled."
    )


class SubscriptionStatsSerializer(serializers.Serializer):
    subscription_id = serializers.IntegerField()
    currency = serializers.CharField(
        help_text="Every money figure here is in it: the strategy's quote currency."
    )
    trades = serializers.IntegerField(help_text="Trades that reached the market.")
    closed_trades = serializers.IntegerField()
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True, help_text="wins / closed trades.")
    realized_pnl = serializers.DecimalField(max_digits=40, decimal_places=8)
    fees = serializers.DecimalField(max_digits=40, decimal_places=8)
    capital = serializers.DecimalField(
        max_digits=40, decimal_places=8, help_text="The capital in force now."
    )
    equity = serializers.DecimalField(
        max_digits=40,
        decimal_places=8,
        help_text="The last stored equity: capital + realized + unrealized, net of fees.",
    )
    return_pct = serializers.FloatField(
        allow_null=True,
        help_text="Time-weighted return in percent (2.5 means 2.5 %), each period measured on "
        "the capital in force then; null once equity reached zero.",
    )
    max_drawdown = serializers.DecimalField(
        max_digits=40,
        decimal_places=8,
        help_text="Largest peak-to-trough fall of PnL (equity less capital), in money.",
    )
    max_drawdown_pct = serializers.FloatField(
        help_text="Largest fall of equity from its peak, in percent of the peak (12.5 means "
        "12.5 %), capital changes left out."
    )
    open_position = OpenPositionSerializer(allow_null=True)
    position = PositionSerializer(
        allow_null=True,
        help_text="The net position kept in step with the exchange's fills; null before the "
        "first fill.",
    )
    divergence = DivergenceSummarySerializer(
        help_text="How far your fills were from the signals (the divergence report's summary)."
    )


class EquityPointSerializer(serializers.Serializer):
    time = serializers.DateTimeField()
    kind = serializers.CharField(help_text="`close`, `fill`, `capital_change` or `daily`.")
    equity = serializers.DecimalField(max_digits=40, decimal_places=8)
    realized = serializers.DecimalField(max_digits=40, decimal_places=8)
    unrealized = serializers.DecimalField(max_digits=40, decimal_places=8)
    capital = serializers.DecimalField(
        max_digits=40, decimal_places=8, help_text="The capital in force at that time."
    )


class EquitySeriesSerializer(serializers.Serializer):
    subscription_id = serializers.IntegerField()
    currency = serializers.CharField(help_text="Every money figure here is in it.")
    resolution = serializers.CharField(allow_null=True)
    points = EquityPointSerializer(many=True)


RESOLUTIONS = ["5m", "15m", "30m", "1h", "4h", "12h", "1d"]


class EquityQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    resolution = serializers.ChoiceField(
        choices=RESOLUTIONS,
        required=False,
        help_text="Keep the last point of each bucket of this length.",
    )

    def validate(self, attrs: dict) -> dict:
        start, end = attrs.get("start"), attrs.get("end")
        if start and end and start > end:
            raise serializers.ValidationError({"end": "end must not be before start"})
        return attrs


class ProtectionTripSerializer(serializers.ModelSerializer):
    trade_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = ProtectionTrip
        fields = ("id", "protection", "action", "reason", "figures", "trade_id", "created_at")
        read_only_fields = fields
        extra_kwargs = {
            "reason": {"help_text": "What tripped, with the figures, as written on the trade."},
            "figures": {
                "help_text": "The figures compared, as exact decimal strings (e.g. "
                "`drawdown_pct`, `limit_pct`, `equity`, `peak`)."
            },
            "trade_id": {"help_text": "The entry it held back; null for a maximum drawdown."},
        }


class PositionCloseSerializer(serializers.Serializer):
    """What a close by hand did: the trades it closed and those still open (with why)."""

    subscription_id = serializers.IntegerField()
    closed_trades = TradeSerializer(many=True, help_text="Closed by this request.")
    open_trades = TradeSerializer(
        many=True,
        help_text="Still open after it, each with its `error`: a close held while a stop "
        "resting on the exchange is in a state not known yet, refused by the exchange, or "
        "whose answer was lost (the order sync finishes it), or another exit under way.",
    )


class SubscriptionCancelSerializer(SubscriptionSerializer):
    """The cancelled subscription, and what became of its position."""

    closed_trades = TradeSerializer(
        many=True, read_only=True, help_text="Closed by this request (`close_positions=true`)."
    )
    open_trades = TradeSerializer(
        many=True,
        read_only=True,
        help_text="Open after the cancel: the strategy's exits still close them (a cancelled "
        "subscription gets no entries, but its exits); a close asked that could not complete "
        "says why in `error`.",
    )

    class Meta(SubscriptionSerializer.Meta):
        fields = (*SubscriptionSerializer.Meta.fields, "closed_trades", "open_trades")
        read_only_fields = fields


class CancelQuerySerializer(serializers.Serializer):
    close_positions = serializers.BooleanField(
        default=False,
        help_text="Also close the open position now, at market (`true`), or leave it to the "
        "strategy's exits (`false`, the default).",
    )


class CancelBodySerializer(StrictFieldsMixin, CancelQuerySerializer):
    """The same choice in a JSON body, for clients that send one with a DELETE."""


class DivergenceSerializer(serializers.ModelSerializer):
    """A difference between the platform and the exchange, found by the reconciliation."""

    difference = serializers.DecimalField(
        max_digits=40,
        decimal_places=12,
        read_only=True,
        allow_null=True,
        help_text="actual - expected: above zero the account holds more than the platform.",
    )
    resync_by = serializers.CharField(source="resync_by.username", read_only=True, default=None)
    resync_order_client_id = serializers.CharField(
        source="resync_order.client_order_id", read_only=True, default=None
    )

    class Meta:
        model = Divergence
        fields = (
            "id",
            "kind",
            "subject",
            "symbol",
            "expected",
            "actual",
            "difference",
            "status",
            "detail",
            "first_seen_at",
            "last_seen_at",
            "resolved_at",
            "resolution",
            "resync_mode",
            "resync_by",
            "resync_at",
            "resync_order_client_id",
        )
        read_only_fields = fields
        extra_kwargs = {
            "expected": {"help_text": "What the platform holds (the sum when shared)."},
            "actual": {"help_text": "What the exchange says."},
            "first_seen_at": {"help_text": "Since when: the first run that found it."},
        }


class ResyncBodySerializer(StrictFieldsMixin, serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=Divergence.ResyncMode.choices,
        help_text="adopt: take the exchange's quantity as the position; close: send an order "
        "of the difference so the account matches the platform again.",
    )
    divergence_id = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The balance or position divergence to resync; optional when only one is open.",
    )


class FillDivergenceSerializer(serializers.Serializer):
    trade_id = serializers.IntegerField()
    leg = serializers.CharField(help_text="`entry`, or `exit` by the strategy's exit signal.")
    side = serializers.CharField(help_text="`buy` or `sell`.")
    execution_id = serializers.IntegerField(help_text="The execution whose signal it followed.")
    signal_price = serializers.DecimalField(
        max_digits=40,
        decimal_places=12,
        help_text="The strategy's price on the signal, else the close it fired on.",
    )
    fill_price = serializers.DecimalField(max_digits=40, decimal_places=12)
    slippage_bps = serializers.DecimalField(
        max_digits=20,
        decimal_places=2,
        help_text="(fill - signal) / signal x 10000 for a buy, (signal - fill) / signal x 10000 "
        "for a sell: above zero the fill cost you.",
    )
    signal_at = serializers.DateTimeField(help_text="When the signal was known.")
    filled_at = serializers.DateTimeField()
    latency_ms = serializers.FloatField(help_text="signal_at to filled_at.")


class MissedSignalSerializer(serializers.Serializer):
    trade_id = serializers.IntegerField()
    execution_id = serializers.IntegerField()
    signal_at = serializers.DateTimeField()
    status = serializers.CharField(help_text="`skipped`, `rejected`, `failed` or `cancelled`.")
    reason = serializers.CharField()


class DivergenceReportSerializer(serializers.Serializer):
    subscription_id = serializers.IntegerField()
    summary = DivergenceSummarySerializer()
    fills = FillDivergenceSerializer(many=True)
    missed_signals = MissedSignalSerializer(many=True)


class FollowersDivergenceSerializer(serializers.Serializer):
    followers = serializers.IntegerField()
    followers_with_fills = serializers.IntegerField()
    slippage_bps_avg = serializers.DecimalField(
        max_digits=20,
        decimal_places=2,
        allow_null=True,
        help_text="The followers' average slippage (bps, against them), averaged over them.",
    )
    latency_ms_avg = serializers.FloatField(allow_null=True)
    signals_missed_avg = serializers.FloatField(allow_null=True)


class StrategyStatsWithFollowersSerializer(StrategyStatsSerializer):
    followers_divergence = FollowersDivergenceSerializer(
        help_text="How far the followers' fills were from the signals, each follower counted once."
    )
