"""Operator admin for strategies. Every state change goes through strategies.services."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString

from core.admin_utils import (
    EMPTY,
    ReadableMixin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    change_link,
    changelist_link,
    fieldset_names,
    first_line,
    milliseconds,
    one_line,
    preformatted,
    pretty_json,
    real_time_drift,
    utc_seconds,
)
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from strategies.services import (
    StrategyCheckUnavailable,
    strategy_settings_check,
    strategy_update_settings,
)

# Edited in place: no version, no invariant depends on them.
PLAIN_FIELDS = ("name", "description", "is_public", "is_marketplace")


class RecentExecutionInline(ReadOnlyInline):
    """The latest few runs, one line each; the link above the inlines lists them all."""

    model = StrategyExecution
    parent_field = "strategy"
    recent_order = ("-interval_start", "-pk")
    limit = 10
    verbose_name_plural = "latest 10 executions"
    fields = (
        "interval_start",
        "started_at",
        "status",
        "trigger",
        "signal_kind",
        "duration",
        "trades_generated",
        "error_line",
    )
    readonly_fields = fields

    @admin.display(description="signal")
    def signal_kind(self, execution: StrategyExecution) -> str:
        return signal_kind(execution)

    @admin.display(description="duration")
    def duration(self, execution: StrategyExecution) -> str:
        return one_line(milliseconds(execution.duration_ms))

    @admin.display(description="error")
    def error_line(self, execution: StrategyExecution) -> SafeString | str:
        return first_line(execution.error)


def signal_kind(execution: StrategyExecution) -> str:
    signal = execution.signal
    return str(signal.get("signal", "?")) if isinstance(signal, dict) else EMPTY


class StrategyForm(forms.ModelForm):
    class Meta:
        model = Strategy
        fields = ("name", "description", "settings", "is_public", "is_marketplace")

    def clean_settings(self) -> Any:
        value = self.cleaned_data["settings"]
        if not isinstance(value, dict):
            raise forms.ValidationError("Settings must be a JSON object.")
        if value != self.instance.settings:
            _dry_run(self.instance, value)
        return value


def _day_ago() -> datetime:
    return timezone.now() - timedelta(days=1)


def _dry_run(strategy: Strategy, settings: dict[str, Any]) -> None:
    """New settings are dry-run with the code on a worker, as the API does, before they are
    stored: a refusal or a check that could not run is the form's error."""
    try:
        strategy_settings_check(strategy=strategy, settings=settings)
    except ValidationError as refusal:
        raise forms.ValidationError(refusal.messages) from refusal
    except StrategyCheckUnavailable as exc:
        raise forms.ValidationError(f"The settings could not be checked; retry ({exc}).") from exc


@admin.register(Strategy)
class StrategyAdmin(ReadableMixin, admin.ModelAdmin):
    form = StrategyForm
    list_display: tuple[str, ...] = (
        "id",
        "name",
        "owner",
        "market",
        "status",
        "subscriber_count",
        "last_run",
        "last_status",
        "failures_24h",
        "is_public",
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
                    "all_executions",
                )
            },
        ),
        ("Timestamps", {"fields": ("created_at", "updated_at")}),
    )
    # subscriptions.admin adds the subscribers and the retire action (which pauses them).
    inlines = (RecentExecutionInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Strategy]:
        # Subqueries, one row each: the list costs the same queries however many runs there are.
        runs = StrategyExecution.objects.filter(strategy=OuterRef("pk"))
        latest = runs.order_by("-interval_start")  # the unique (strategy, candle) index
        failed = (
            runs.filter(status=StrategyExecution.Status.FAILED, started_at__gte=_day_ago())
            .values("strategy")
            .annotate(total=Count("pk"))
            .values("total")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_run_at=Subquery(latest.values("started_at")[:1]),
                last_run_status=Subquery(latest.values("status")[:1]),
                failed_24h=Coalesce(Subquery(failed), 0),
            )
        )

    @admin.display(description="market", ordering="symbol")
    def market(self, strategy: Strategy) -> str:
        return f"{strategy.exchange} {strategy.symbol} {strategy.resolution}"

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, strategy: Any) -> str:
        return one_line(utc_seconds(strategy.last_run_at))

    @admin.display(description="last status", ordering="last_run_status")
    def last_status(self, strategy: Any) -> str:
        return strategy.last_run_status or EMPTY

    @admin.display(description="failed (24 h)", ordering="failed_24h")
    def failures_24h(self, strategy: Any) -> SafeString | str:
        count = int(strategy.failed_24h)
        if not count:
            return "0"
        return changelist_link(
            StrategyExecution,
            str(count),
            strategy__id__exact=strategy.pk,
            status__exact=StrategyExecution.Status.FAILED,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # strategies are deployed through the API, which validates the market

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retire instead: executions and trades keep referring to it

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
        # that the next execution uses it (the form has dry-run them).
        if form.cleaned_data["settings"] != stored.settings:
            strategy_update_settings(strategy=stored, settings=form.cleaned_data["settings"])


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


# Executions are records the pipeline writes: operators read them, never edit them.
@admin.register(StrategyExecution)
class StrategyExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "strategy_link",
        "interval_start",
        "status",
        "trigger",
        "signal_kind",
        "started_at",
        "duration",
        "drift",
        "subscriber_count",
        "trades_generated",
        "attempts",
        "error_line",
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
                    "duration",
                    "drift",
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
        return change_link(
            execution.strategy, f"#{execution.strategy_id} {execution.strategy.name}"
        )

    @admin.display(description="signal")
    def signal_kind(self, execution: StrategyExecution) -> str:
        return signal_kind(execution)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, execution: StrategyExecution) -> str:
        return one_line(milliseconds(execution.duration_ms))

    @admin.display(description="drift", ordering="drift_ms")
    def drift(self, execution: StrategyExecution) -> str:
        """Close → start; blank for manual runs and replays, which start long after."""
        return one_line(real_time_drift(execution.drift_ms, execution.trigger))

    @admin.display(description="error")
    def error_line(self, execution: StrategyExecution) -> SafeString | str:
        return first_line(execution.error)

    @admin.display(description="signal")
    def signal_json(self, execution: StrategyExecution) -> str:
        return pretty_json(execution.signal)

    @admin.display(description="error")
    def error_text(self, execution: StrategyExecution) -> str:
        return preformatted(execution.error)

    @admin.display(description="logs")
    def logs_text(self, execution: StrategyExecution) -> str:
        return preformatted(execution.logs)
