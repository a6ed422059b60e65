"""Small pieces shared by the apps' admin modules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record the platform writes (executions, trades, candles, orders): operators look only.

    Editing one by hand would bypass the services that keep counters, PnL and the
    exactly-once fences right.
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """The parent's most recent related rows, read-only, each linking to its own page.

    An inline has no pagination, and a popular strategy has thousands of subscribers and
    executions: only the latest ``limit`` rows are shown (by ``recent_order``).
    """

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    limit = 20
    parent_field = ""  # the foreign key to the parent model
    recent_order: tuple[str, ...] = ("-pk",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        parent_id = match.kwargs.get("object_id") if match else None
        if parent_id is None:
            return queryset.none()
        # The formset filters by the parent afterwards and cannot take a sliced queryset.
        recent = (
            queryset.filter(**{self.parent_field: parent_id})
            .order_by(*self.recent_order)
            .values_list("pk", flat=True)[: self.limit]
        )
        return queryset.filter(pk__in=list(recent)).order_by(*self.recent_order)


def pretty_json(value: Any) -> SafeString | str:
    if value in (None, "", {}, []):
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, cls=DjangoJSONEncoder)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def preformatted(text: str) -> SafeString | str:
    if not text:
        return "—"
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def change_link(obj: Model | None, label: str | None = None) -> SafeString | str:
    if obj is None:
        return "—"
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def changelist_link(model: type[Model], label: str, **filters: Any) -> SafeString:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html('<a href="{}?{}">{}</a>', url, query, label)


M = TypeVar("M", bound=Model)


def fieldset_names(fieldsets: Any) -> tuple[str, ...]:
    """Every field named in ``fieldsets`` (for pages that show all of them read-only)."""
    return tuple(name for _, section in fieldsets for name in section["fields"])


def run_service_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    objects: Iterable[M],
    service: Callable[[M], Any],
    *,
    verb: str,
) -> None:
    """Apply ``service`` to each object; report successes and, one by one, refusals."""
    done = 0
    for obj in objects:
        try:
            service(obj)
        except ValidationError as exc:
            modeladmin.message_user(
                request, f"{obj}: not {verb}: {'; '.join(exc.messages)}", messages.WARNING
            )
        else:
            done += 1
    if done:
        modeladmin.message_user(request, f"{done} {verb}.", messages.SUCCESS)
