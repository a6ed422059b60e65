"""Operator admin for subscriptions and credentials. State changes go through the services, so
subscriber counts, the strategy registry and the beat schedule stay right."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from core.admin_utils import (
    ReadableMixin,
    ReadOnlyInline,
    change_link,
    changelist_link,
    first_line,
    run_service_action,
)
from strategies.admin import StrategyAdmin
from strategies.models import Strategy
from subscriptions.models import PROTECTION_FIELDS, BrokerCredential, StrategySubscription
from subscriptions.services import (
    protections_validate,
    sizing_validate,
    strategy_retire,
    subscription_cancel,
    subscription_pause,
    subscription_resume,
    subscription_update_settings,
)

Status = StrategySubscription.Status


class SubscriptionForm(forms.ModelForm):
    class Meta:
        model = StrategySubscription
        fields = ("capital", "risk_per_trade", "leverage", "settings", *PROTECTION_FIELDS)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        # The API's sizing rules (capital > 0, risk in (0, 0.1], 1 <= leverage <= maximum).
        try:
            sizing_validate(
                capital=data["capital"],
                risk_per_trade=data["risk_per_trade"],
                leverage=data["leverage"],
            )
        except ValidationError as exc:
            raise forms.ValidationError(exc.message_dict) from exc
        try:  # the API's bounds too, and a cooldown needs its count and its duration
            protections_validate({name: data.get(name) for name in PROTECTION_FIELDS})
        except ValidationError as exc:
            raise forms.ValidationError(exc.message_dict) from exc
        if not isinstance(data.get("settings"), dict):
            self.add_error("settings", "Settings must be a JSON object.")
        return data


@admin.register(StrategySubscription)
class StrategySubscriptionAdmin(ReadableMixin, admin.ModelAdmin):
    form = SubscriptionForm
    list_display = (
        "id",
        "user",
        "strategy_link",
        "mode",
        "status",
        "reason",
        "capital",
        "risk_per_trade",
        "leverage",
        "realized_pnl",
        "fees_paid",
        "credential_label",
        "created_at",
    )
    list_filter = (
        "status",
        "mode",
        "entry_order_type",
        "strategy__exchange",
        "strategy__resolution",
        "created_at",
    )
    search_fields = ("user__username", "user__email", "strategy__name", "status_reason")
    ordering = ("-created_at", "-id")
    list_select_related = ("user", "strategy", "credential")
    date_hierarchy = "created_at"
    readonly_fields = (
        "user",
        "strategy_link",
        "mode",
        "credential_label",
        "status",
        "status_reason",
        "realized_pnl",
        "fees_paid",
        "created_at",
        "updated_at",
        "cancelled_at",
        "min_order_policy",
        "join_policy",
        "entry_order_type",
        "margin_mode",
        "equity_peak",
    )
    fieldsets = (
        (None, {"fields": ("user", "strategy_link", "mode", "credential_label")}),
        (
            "Status",
            {
                "description": "Changed with the list's actions (pause, resume, cancel).",
                "fields": ("status", "status_reason", "cancelled_at"),
            },
        ),
        ("Sizing", {"fields": ("capital", "risk_per_trade", "leverage", "settings")}),
        (
            "Protections",
            {
                "description": "The follower's own guards; empty is off.",
                "fields": (*PROTECTION_FIELDS, "equity_peak"),
            },
        ),
        (
            "Live trading",
            {"fields": ("min_order_policy", "join_policy", "entry_order_type", "margin_mode")},
        ),
        ("Results", {"fields": ("realized_pnl", "fees_paid")}),
        ("Timestamps", {"fields": ("created_at", "updated_at")}),
    )
    actions: tuple[str, ...] = (
        "pause_subscriptions",
        "resume_subscriptions",
        "cancel_subscriptions",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users subscribe through the API, which checks the credential

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # cancel instead: trades keep referring to the subscription

    @admin.display(description="strategy", ordering="strategy__name")
    def strategy_link(self, subscription: StrategySubscription) -> str:
        return change_link(subscription.strategy)

    @admin.display(description="why", ordering="status_reason")
    def reason(self, subscription: StrategySubscription) -> SafeString | str:
        return first_line(subscription.status_reason, limit=60)

    @admin.display(description="credential")
    def credential_label(self, subscription: StrategySubscription) -> str:
        credential = subscription.credential
        return f"{credential.label} ({credential.masked_api_key})" if credential else "—"

    def save_model(
        self, request: HttpRequest, obj: StrategySubscription, form: Any, change: bool
    ) -> None:
        data = form.cleaned_data
        subscription_update_settings(
            subscription=obj,
            capital=data["capital"],
            risk_per_trade=data["risk_per_trade"],
            leverage=data["leverage"],
            settings=data["settings"],
            protections={name: data.get(name) for name in PROTECTION_FIELDS},
        )

    @admin.action(description="Pause selected subscriptions")
    def pause_subscriptions(self, request: HttpRequest, queryset: QuerySet) -> None:
        run_service_action(
            self,
            request,
            queryset.filter(status=Status.ACTIVE),
            lambda s: subscription_pause(subscription=s, reason="paused by an operator"),
            verb="paused",
        )

    @admin.action(description="Resume selected subscriptions")
    def resume_subscriptions(self, request: HttpRequest, queryset: QuerySet) -> None:
        run_service_action(
            self,
            request,
            queryset.filter(status=Status.PAUSED),
            lambda s: subscription_resume(subscription=s),
            verb="resumed",
        )

    @admin.action(description="Cancel selected subscriptions")
    def cancel_subscriptions(self, request: HttpRequest, queryset: QuerySet) -> None:
        run_service_action(
            self,
            request,
            queryset.exclude(status=Status.CANCELLED),
            lambda s: subscription_cancel(subscription=s),
            verb="cancelled",
        )


class InUseFilter(admin.SimpleListFilter):
    title = "in use"
    parameter_name = "in_use"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "By an open subscription"), ("no", "Not in use")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(open_subscriptions__gt=0)
        if self.value() == "no":
            return queryset.filter(open_subscriptions=0)
        return queryset


@admin.register(BrokerCredential)
class BrokerCredentialAdmin(ReadableMixin, admin.ModelAdmin):
    """Label, exchange and masked key only: the ciphertexts are not even on the page."""

    list_display = (
        "label",
        "user",
        "exchange",
        "masked_key",
        "is_sandbox",
        "open_subscriptions",
        "created_at",
    )
    list_filter = ("exchange", "is_sandbox", InUseFilter, "created_at")
    search_fields = ("label", "user__username", "exchange")
    ordering = ("-created_at", "-id")
    list_select_related = ("user",)
    fields = ("label", "user", "exchange", "masked_key", "is_sandbox", "open_subscriptions")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .defer("api_key_encrypted", "secret_encrypted", "passphrase_encrypted")
            .annotate(
                open_subscriptions=Count(
                    "subscriptions", filter=~Q(subscriptions__status=Status.CANCELLED)
                )
            )
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # only their owner, through the API, ever handles the plain text

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the owner deletes through the API (refused while a subscription uses it)

    @admin.display(description="API key")
    def masked_key(self, credential: BrokerCredential) -> str:
        return credential.masked_api_key

    @admin.display(description="open subscriptions", ordering="open_subscriptions")
    def open_subscriptions(self, credential: BrokerCredential) -> int:
        return credential.open_subscriptions  # type: ignore[attr-defined]


class SubscriberInline(ReadOnlyInline):
    model = StrategySubscription
    parent_field = "strategy"
    related = ("user",)
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


def _with_subscribers(fieldsets: Any) -> tuple:
    return tuple(
        (name, {**opts, "fields": (*opts["fields"], "all_subscribers")})
        if name == "Audience"
        else (name, opts)
        for name, opts in fieldsets
    )


# The strategy admin as operators use it: strategies.admin knows nothing of subscriptions (it
# sits below them), so this layer adds the subscribers and the retire action that pauses them.
admin.site.unregister(Strategy)


@admin.register(Strategy)
class StrategyWithSubscribersAdmin(StrategyAdmin):
    actions = ("retire_strategies",)
    fieldsets = _with_subscribers(StrategyAdmin.fieldsets)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list:
        return [SubscriberInline, *super().get_inlines(request, obj)]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "all_subscribers"]

    @admin.display(description="subscribers")
    def all_subscribers(self, strategy: Strategy) -> str:
        return changelist_link(
            StrategySubscription, "all its subscriptions", strategy__id__exact=strategy.pk
        )

    @admin.action(description="Retire selected strategies (pauses their subscriptions)")
    def retire_strategies(self, request: HttpRequest, queryset: QuerySet[Strategy]) -> None:
        run_service_action(
            self,
            request,
            queryset.exclude(status=Strategy.Status.RETIRED),
            lambda strategy: strategy_retire(strategy=strategy),
            verb="retired",
        )
