"""Operator admin for the candle store: records the platform writes, read-only."""

from __future__ import annotations

from django.contrib import admin

from core.admin_utils import ReadOnlyAdmin
from markets.models import Candle


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
