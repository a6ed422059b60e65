"""Operator admin for trades, orders and positions: read-only.

Trades, orders and positions are written by the fan-out and the order sync under their
exactly-once fences; an edit by hand would desynchronise them from the exchange and from the
subscription's realized PnL.
"""

from __future__ import annotations

from django.contrib import admin

from core.admin_utils import (
    ReadOnlyAdmin,
    change_link,
    fieldset_names,
    preformatted,
    pretty_json,
)
from trades.models import Order, Position, Trade


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
            {"fields": ("subscription_link", "execution_link", "exit_execution_link", "status")},
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

    @admin.display(description="entry execution")
    def execution_link(self, trade: Trade) -> str:
        return change_link(trade.execution)

    @admin.display(description="exit execution")
    def exit_execution_link(self, trade: Trade) -> str:
        return change_link(trade.exit_execution)

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
        "subscription",
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
