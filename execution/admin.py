"""Operator admin for executions and candles: records the platform writes, read-only."""

from __future__ import annotations

from django.contrib import admin

from core.admin_utils import (
    ReadOnlyAdmin,
    change_link,
    fieldset_names,
    preformatted,
    pretty_json,
)
from execution.models import Candle, StrategyExecution


@admin.register(StrategyExecution)
class StrategyExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "strategy_link",
        "interval_start",
        "status",
        "trigger",
        "signal_kind",
        "duration_ms",
        "drift_ms",
        "subscriber_count",
        "trades_generated",
        "attempts",
        "short_error",
    )
    list_filter = (
        "status",
        "trigger",
        "sandbox_isolation",
        "strategy__resolution",
        "strategy__exchange",
        "interval_start",
    )
    search_fields = ("strategy__name", "=strategy__id", "error", "worker_id")
    ordering = ("-interval_start", "-id")
    list_select_related = ("strategy",)
    date_hierarchy = "interval_start"
    fieldsets = (
        (
            None,
            {"fields": ("strategy_link", "status", "trigger", "interval_start", "interval_end")},
        ),
        ("Signal", {"fields": ("signal_json", "close_price", "error_text")}),
        (
            "Timing",
            {
                "fields": (
                    "scheduled_at",
                    "data_available_at",
                    "started_at",
                    "finished_at",
                    "duration_ms",
                    "drift_ms",
                    "worker_id",
                    "attempts",
                )
            },
        ),
        (
            "Run",
            {
                "fields": (
                    "sandbox_isolation",
                    "settings_version",
                    "code_version",
                    "candles_used",
                    "subscriber_count",
                    "trades_generated",
                    "fanout_total",
                    "fanout_done",
                    "fanout_dispatched_at",
                    "first_order_at",
                    "last_order_at",
                )
            },
        ),
        ("Captured logs", {"classes": ("collapse",), "fields": ("logs_text",)}),
    )
    readonly_fields = fieldset_names(fieldsets)

    @admin.display(description="strategy", ordering="strategy__name")
    def strategy_link(self, execution: StrategyExecution) -> str:
        return change_link(execution.strategy)

    @admin.display(description="signal")
    def signal_kind(self, execution: StrategyExecution) -> str:
        signal = execution.signal
        return str(signal.get("signal", "?")) if isinstance(signal, dict) else "—"

    @admin.display(description="error")
    def short_error(self, execution: StrategyExecution) -> str:
        error = execution.error
        return (error[:80] + "…") if len(error) > 80 else error

    @admin.display(description="signal")
    def signal_json(self, execution: StrategyExecution) -> str:
        return pretty_json(execution.signal)

    @admin.display(description="error")
    def error_text(self, execution: StrategyExecution) -> str:
        return preformatted(execution.error)

    @admin.display(description="logs")
    def logs_text(self, execution: StrategyExecution) -> str:
        return preformatted(execution.logs)


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = (
        "exchange",
        "symbol",
        "resolution",
        "open_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
    )
    list_filter = ("exchange", "resolution", "symbol")
    search_fields = ("symbol", "exchange")
    ordering = ("exchange", "symbol", "resolution", "-open_time")
    date_hierarchy = "open_time"
    # The candle store grows large: no full count on every page view.
    show_full_result_count = False
    fields = list_display
    readonly_fields = list_display
