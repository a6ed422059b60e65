"""Operator admin for trades, orders and positions: read-only.

Trades, orders and positions are written by the fan-out and the order sync under their
exactly-once fences; an edit by hand would desynchronise them from the exchange and from the
subscription's realized PnL.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from core.admin_utils import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    change_link,
    change_link_to,
    changelist_link,
    fieldset_names,
    first_line,
    preformatted,
    pretty_json,
)
from strategies.admin import StrategyExecutionAdmin
from strategies.models import StrategyExecution
from subscriptions.admin import StrategySubscriptionAdmin
from subscriptions.models import StrategySubscription
from trades.manual import (
    CloseOutcome,
    NothingToClose,
    subscription_cancel_and_close,
    subscription_close_now,
)
from trades.models import Divergence, Order, Position, ProtectionTrip, Trade
from trades.report import subscription_divergence_report
from trades.resync import ResyncRefused, divergence_resync


class OrderInline(ReadOnlyInline):
    """A trade's or an execution's orders, one line each."""

    model = Order
    parent_field = "trade"
    recent_order = ("created_at", "pk")
    verbose_name_plural = "orders (first 20)"
    fields = (
        "client_order_id",
        "purpose",
        "side",
        "type",
        "amount",
        "status",
        "filled",
        "average_price",
        "error_line",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="error")
    def error_line(self, order: Order) -> SafeString | str:
        return first_line(order.error, limit=60)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "subscription_link",
        "user",
        "strategy",
        "symbol",
        "side",
        "status",
        "quantity",
        "entry_price",
        "exit_price",
        "pnl",
        "total_fees",
        "entry_time",
        "exit_time",
        "execution_link",
        "orders_link",
    )
    list_filter = ("status", "side", "subscription__mode", "symbol", "created_at")
    search_fields = (
        "client_order_id",
        "exchange_order_id",
        "exit_client_order_id",
        "symbol",
        "subscription__user__username",
        "subscription__strategy__name",
        "=subscription__id",
    )
    ordering = ("-created_at", "-id")
    list_select_related = ("subscription__user", "subscription__strategy")
    date_hierarchy = "created_at"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "subscription_link",
                    "execution_link",
                    "exit_execution_link",
                    "orders_link",
                    "status",
                )
            },
        ),
        (
            "Position",
            {
                "fields": (
                    "symbol",
                    "side",
                    "quantity",
                    "entry_price",
                    "entry_time",
                    "stop_loss",
                    "take_profit",
                    "exit_price",
                    "exit_time",
                )
            },
        ),
        ("Result", {"fields": ("entry_fee", "exit_fee", "pnl")}),
        (
            "Orders",
            {
                "fields": (
                    "client_order_id",
                    "exchange_order_id",
                    "exit_client_order_id",
                    "exit_exchange_order_id",
                )
            },
        ),
        ("Problems and metadata", {"fields": ("error_text", "metadata_json")}),
        ("Timestamps", {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = fieldset_names(fieldsets)

    inlines = (OrderInline,)

    @admin.display(description="subscription", ordering="subscription_id")
    def subscription_link(self, trade: Trade) -> str:
        return change_link(trade.subscription, f"#{trade.subscription_id}")

    @admin.display(description="user", ordering="subscription__user__username")
    def user(self, trade: Trade) -> str:
        return str(trade.subscription.user)

    @admin.display(description="strategy", ordering="subscription__strategy__name")
    def strategy(self, trade: Trade) -> str:
        return trade.subscription.strategy.name

    @admin.display(description="fees")
    def total_fees(self, trade: Trade) -> str:
        return str(trade.fees)

    @admin.display(description="entry execution", ordering="execution_id")
    def execution_link(self, trade: Trade) -> str:
        return change_link_to(StrategyExecution, trade.execution_id)

    @admin.display(description="orders")
    def orders_link(self, trade: Trade) -> str:
        return changelist_link(Order, "its orders", trade__id__exact=trade.pk)

    @admin.display(description="exit execution")
    def exit_execution_link(self, trade: Trade) -> str:
        return change_link_to(StrategyExecution, trade.exit_execution_id)

    @admin.display(description="error")
    def error_text(self, trade: Trade) -> str:
        return preformatted(trade.error)

    @admin.display(description="metadata")
    def metadata_json(self, trade: Trade) -> str:
        return pretty_json(trade.metadata)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "client_order_id",
        "subscription_link",
        "purpose",
        "symbol",
        "side",
        "type",
        "amount",
        "status",
        "filled",
        "average_price",
        "fee",
        "attempts",
        "error_line",
        "trade_link",
        "execution_link",
        "created_at",
    )
    list_filter = ("status", "side", "type", "reduce_only", "created_at")
    search_fields = (
        "client_order_id",
        "exchange_order_id",
        "symbol",
        "subscription__user__username",
        "=subscription__id",
        "=trade__id",
        "=execution__id",
    )
    ordering = ("-created_at", "-id")
    list_select_related = ("subscription__user",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "subscription",
        "execution",
        "trade",
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
        "attempts",
        "error_text",
        "created_at",
        "sent_at",
        "acknowledged_at",
        "updated_at",
        "closed_at",
    )
    fields = readonly_fields

    @admin.display(description="subscription", ordering="subscription_id")
    def subscription_link(self, order: Order) -> str:
        return change_link(
            order.subscription, f"#{order.subscription_id} {order.subscription.user}"
        )

    @admin.display(description="trade", ordering="trade_id")
    def trade_link(self, order: Order) -> str:
        return change_link_to(Trade, order.trade_id)

    @admin.display(description="execution", ordering="execution_id")
    def execution_link(self, order: Order) -> str:
        return change_link_to(StrategyExecution, order.execution_id)

    @admin.display(description="error")
    def error_line(self, order: Order) -> SafeString | str:
        return first_line(order.error, limit=60)

    @admin.display(description="error")
    def error_text(self, order: Order) -> str:
        return preformatted(order.error)


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = (
        "subscription",
        "symbol",
        "side",
        "quantity",
        "average_entry_price",
        "mark_price",
        "unrealized_pnl",
        "realized_pnl",
        "fees_paid",
        "updated_at",
    )
    list_filter = ("side", "symbol")
    search_fields = ("symbol", "subscription__user__username", "=subscription__id")
    ordering = ("-updated_at",)
    list_select_related = ("subscription__user",)
    readonly_fields = (
        "subscription",
        "symbol",
        "side",
        "quantity",
        "average_entry_price",
        "open_fees",
        "mark_price",
        "unrealized_pnl",
        "realized_pnl",
        "fees_paid",
        "updated_at",
    )
    fields = readonly_fields


@admin.register(ProtectionTrip)
class ProtectionTripAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "subscription_link", "protection", "action", "reason")
    list_filter = ("protection", "action", "created_at")
    search_fields = ("reason", "subscription__user__username", "=subscription__id", "=trade__id")
    ordering = ("-created_at", "-id")
    list_select_related = ("subscription__user",)
    date_hierarchy = "created_at"
    fields = (
        "subscription_link",
        "protection",
        "action",
        "reason",
        "figures_json",
        "trade_link",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="subscription", ordering="subscription_id")
    def subscription_link(self, trip: ProtectionTrip) -> str:
        return change_link(trip.subscription, f"#{trip.subscription_id}")

    @admin.display(description="trade")
    def trade_link(self, trip: ProtectionTrip) -> str:
        return change_link(trip.trade)

    @admin.display(description="figures")
    def figures_json(self, trip: ProtectionTrip) -> str:
        return pretty_json(trip.figures)


@admin.register(Divergence)
class DivergenceAdmin(ReadOnlyAdmin):
    """The reconciliation's findings (read-only), and the operators' resync of them: the same
    service as the subscriber's API, recorded with the operator as the one who asked."""

    list_display = (
        "last_seen_at",
        "subscription_link",
        "kind",
        "subject",
        "expected",
        "actual",
        "status",
        "first_seen_at",
    )
    list_filter = ("status", "kind", "last_seen_at")
    search_fields = ("subject", "subscription__user__username", "=subscription__id")
    ordering = ("-last_seen_at", "-id")
    list_select_related = ("subscription__user",)
    actions = ("resync_adopt", "resync_close")
    fields = (
        "subscription_link",
        "kind",
        "subject",
        "symbol",
        "expected",
        "actual",
        "status",
        "detail_json",
        "first_seen_at",
        "last_seen_at",
        "resolved_at",
        "resolution",
        "resync_mode",
        "resync_by",
        "resync_at",
        "resync_order",
    )
    readonly_fields = fields

    @admin.display(description="subscription", ordering="subscription_id")
    def subscription_link(self, divergence: Divergence) -> str:
        return change_link(divergence.subscription, f"#{divergence.subscription_id}")

    @admin.display(description="detail")
    def detail_json(self, divergence: Divergence) -> str:
        return pretty_json(divergence.detail)

    @admin.action(description="Resync: adopt the exchange's quantity as the position")
    def resync_adopt(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._resync(request, queryset, Divergence.ResyncMode.ADOPT)

    @admin.action(description="Resync: close the difference by an order")
    def resync_close(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._resync(request, queryset, Divergence.ResyncMode.CLOSE)

    def _resync(self, request: HttpRequest, queryset: QuerySet, mode: str) -> None:
        operator = request.user
        assert isinstance(operator, User)  # the admin is for staff users only
        for divergence in queryset.select_related("subscription").order_by("pk"):
            try:
                done = divergence_resync(
                    divergence=divergence, mode=mode, user=operator, via="admin"
                )
            except ResyncRefused as exc:
                self.message_user(request, f"{divergence}: {exc}", messages.WARNING)
                continue
            self.message_user(request, f"{done}: {mode}", messages.SUCCESS)


class ProtectionTripInline(ReadOnlyInline):
    model = ProtectionTrip
    parent_field = "subscription"
    verbose_name_plural = "protection trips (most recent 20)"
    fields = ("created_at", "protection", "action", "reason")
    readonly_fields = fields


# The subscription admin as operators use it: subscriptions.admin knows nothing of trades (it
# sits below them), so this layer adds the protections' trips and the actions on positions.
admin.site.unregister(StrategySubscription)


@admin.register(StrategySubscription)
class StrategySubscriptionWithPositionsAdmin(StrategySubscriptionAdmin):
    inlines = [ProtectionTripInline]
    actions = (*StrategySubscriptionAdmin.actions, "close_positions_now", "cancel_and_close")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "divergence_report"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        report = {
            "description": "Per fill: signal price, fill price, slippage in bps (against the "
            "follower), signal to fill latency; and the signals it did not get.",
            "fields": ("divergence_report",),
        }
        return [*super().get_fieldsets(request, obj), ("Divergence from the signals", report)]

    @admin.display(description="report")
    def divergence_report(self, subscription: StrategySubscription) -> str:
        return pretty_json(subscription_divergence_report(subscription=subscription))

    @admin.action(description="Close the open positions of selected subscriptions now")
    def close_positions_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for subscription in queryset.order_by("pk"):
            try:
                outcome = subscription_close_now(subscription=subscription)
            except NothingToClose:
                continue
            self._report(request, subscription, outcome)

    @admin.action(description="Cancel selected subscriptions and close their positions")
    def cancel_and_close(self, request: HttpRequest, queryset: QuerySet) -> None:
        for subscription in queryset.exclude(status=StrategySubscription.Status.CANCELLED):
            try:
                _, outcome = subscription_cancel_and_close(
                    subscription=subscription, close_positions=True
                )
            except ValidationError as exc:
                self.message_user(
                    request, f"{subscription}: not cancelled: {'; '.join(exc.messages)}"
                )
                continue
            self._report(request, subscription, outcome, cancelled=True)

    def _report(
        self,
        request: HttpRequest,
        subscription: StrategySubscription,
        outcome: CloseOutcome,
        *,
        cancelled: bool = False,
    ) -> None:
        verb = "cancelled, " if cancelled else ""
        closed = f"{subscription}: {verb}{len(outcome.closed)} trade(s) closed"
        if not outcome.still_open:
            self.message_user(request, closed, messages.SUCCESS)
            return
        left = "; ".join(f"#{t.pk} {t.error or 'still open'}" for t in outcome.still_open)
        self.message_user(request, f"{closed}, still open: {left}", messages.WARNING)


class ExecutionTradeInline(ReadOnlyInline):
    """The trades an execution opened, one line each (its full list: the link above)."""

    model = Trade
    fk_name = parent_field = "execution"
    recent_order = ("pk",)
    related = ("subscription__user",)
    verbose_name_plural = "trades opened (first 20)"
    fields = ("subscription", "side", "status", "quantity", "entry_price", "exit_price", "pnl")
    readonly_fields = fields


class ExecutionOrderInline(OrderInline):
    parent_field = "execution"
    verbose_name_plural = "orders sent (first 20)"


def _with_outcome(fieldsets: Any) -> tuple:
    outcome = ("Outcome", {"fields": ("trades_link", "orders_link")})
    return (*fieldsets[:2], outcome, *fieldsets[2:])


# The execution admin as operators use it: strategies.admin knows nothing of trades (it sits
# below them), so this layer links each execution to the trades and orders it produced.
admin.site.unregister(StrategyExecution)


@admin.register(StrategyExecution)
class StrategyExecutionWithTradesAdmin(StrategyExecutionAdmin):
    fieldsets = _with_outcome(StrategyExecutionAdmin.fieldsets)
    readonly_fields = fieldset_names(fieldsets)
    inlines = (ExecutionTradeInline, ExecutionOrderInline)

    @admin.display(description="trades")
    def trades_link(self, execution: StrategyExecution) -> str:
        return _links(
            (Trade, "opened", {"execution__id__exact": execution.pk}),
            (Trade, "closed", {"exit_execution__id__exact": execution.pk}),
        )

    @admin.display(description="orders")
    def orders_link(self, execution: StrategyExecution) -> str:
        return _links((Order, "all its orders", {"execution__id__exact": execution.pk}))


def _links(*targets: tuple[type[Model], str, dict[str, Any]]) -> SafeString:
    return format_html_join(
        " · ",
        "{}",
        ((changelist_link(model, label, **filters),) for model, label, filters in targets),
    )
