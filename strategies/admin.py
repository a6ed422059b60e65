"""Operator admin for strategies. Every state change goes through strategies.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_utils import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    changelist_link,
    preformatted,
    pretty_json,
    run_service_action,
)
from execution.models import StrategyExecution
from strategies.models import Strategy, StrategyVersion
from strategies.services import strategy_retire, strategy_update_settings
from subscriptions.models import StrategySubscription

# Edited in place: no version, no invariant depends on them.
PLAIN_FIELDS = ("name", "description", "is_public", "is_marketplace")


class SubscriberInline(ReadOnlyInline):
    model = StrategySubscription
    parent_field = "strategy"
    verbose_name_plural = "subscribers (most recent 20)"
    fields = (
        "user",
        "mode",
        "status",
        "capital",
        "risk_per_trade",
        "leverage",
        "realized_pnl",
        "fees_paid",
        "created_at",
    )
    readonly_fields = fields


class RecentExecutionInline(ReadOnlyInline):
    model = StrategyExecution
    parent_field = "strategy"
    recent_order = ("-interval_start", "-pk")
    verbose_name_plural = "recent executions (latest 20)"
    fields = (
        "interval_start",
        "status",
        "trigger",
        "signal_json",
        "duration_ms",
        "drift_ms",
        "subscriber_count",
        "trades_generated",
        "error",
    )
    readonly_fields = fields

    @admin.display(description="signal")
    def signal_json(self, execution: StrategyExecution) -> str:
        return pretty_json(execution.signal)


class StrategyForm(forms.ModelForm):
    class Meta:
        model = Strategy
        fields = ("name", "description", "settings", "is_public", "is_marketplace")

    def clean_settings(self) -> Any:
        value = self.cleaned_data["settings"]
        if not isinstance(value, dict):
            raise forms.ValidationError("Settings must be a JSON object.")
        return value


@admin.register(Strategy)
class StrategyAdmin(admin.ModelAdmin):
    form = StrategyForm
    list_display = (
        "id",
        "name",
        "owner",
        "exchange",
        "symbol",
        "resolution",
        "status",
        "subscriber_count",
        "is_public",
        "is_marketplace",
        "settings_version",
        "code_version",
        "created_at",
    )
    list_display_links = ("id", "name")
    list_filter = ("status", "resolution", "is_public", "is_marketplace", "exchange")
    search_fields = ("name", "owner__username", "owner__email", "symbol", "exchange")
    ordering = ("-created_at", "-id")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "owner",
        "exchange",
        "symbol",
        "resolution",
        "status",
        "source",
        "subscriber_count",
        "settings_version",
        "code_version",
        "lookback",
        "timeout_s",
        "all_subscribers",
        "all_executions",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "owner", "description", "status")}),
        ("Market", {"fields": ("exchange", "symbol", "resolution")}),
        (
            "Code and settings",
            {
                "description": (
                    "The code is its author's (deployed through the API). Saving changed "
                    "settings bumps their version and publishes the change, as the API does."
                ),
                "fields": (
                    "source",
                    "code_version",
                    "lookback",
                    "timeout_s",
                    "settings",
                    "settings_version",
                ),
            },
        ),
        (
            "Audience",
            {
                "fields": (
                    "is_public",
                    "is_marketplace",
                    "subscriber_count",
                    "all_subscribers",
                    "all_executions",
                )
            },
        ),
        ("Timestamps", {"fields": ("created_at", "updated_at")}),
    )
    inlines = (SubscriberInline, RecentExecutionInline)
    actions = ("retire_strategies",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # strategies are deployed through the API, which validates the market

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retire instead: executions and trades keep referring to it

    @admin.display(description="subscribers")
    def all_subscribers(self, strategy: Strategy) -> str:
        return changelist_link(
            StrategySubscription, "all its subscriptions", strategy__id__exact=strategy.pk
        )

    @admin.display(description="executions")
    def all_executions(self, strategy: Strategy) -> str:
        return changelist_link(
            StrategyExecution, "all its executions", strategy__id__exact=strategy.pk
        )

    @admin.display(description="code")
    def source(self, strategy: Strategy) -> str:
        return preformatted(strategy.code)

    def save_model(self, request: HttpRequest, obj: Strategy, form: Any, change: bool) -> None:
        # ``obj`` already carries the form's values: compare with the row as stored.
        stored = Strategy.objects.get(pk=obj.pk)
        plain = [f for f in PLAIN_FIELDS if getattr(obj, f) != getattr(stored, f)]
        if plain:
            obj.save(update_fields=[*plain, "updated_at"])
        # Settings are versioned: the service bumps the version and publishes the change so
        # that the next execution uses it.
        if form.cleaned_data["settings"] != stored.settings:
            strategy_update_settings(strategy=stored, settings=form.cleaned_data["settings"])

    @admin.action(description="Retire selected strategies (pauses their subscriptions)")
    def retire_strategies(self, request: HttpRequest, queryset: QuerySet[Strategy]) -> None:
        run_service_action(
            self,
            request,
            queryset.exclude(status=Strategy.Status.RETIRED),
            lambda strategy: strategy_retire(strategy=strategy),
            verb="retired",
        )


@admin.register(StrategyVersion)
class StrategyVersionAdmin(ReadOnlyAdmin):
    list_display = ("strategy", "version", "lookback", "created_at")
    list_filter = ("created_at",)
    search_fields = ("strategy__name", "strategy__owner__username")
    ordering = ("strategy", "-version")
    list_select_related = ("strategy",)
    fields = ("strategy", "version", "lookback", "source", "created_at")
    readonly_fields = fields

    @admin.display(description="code")
    def source(self, version: StrategyVersion) -> str:
        return preformatted(version.code)
