"""Small pieces shared by the apps' admin modules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import DateTimeField, DecimalField, Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

EMPTY = "—"
# Executions started by a candle close as it happens: their drift (close → start) means
# something. A manual run or a replay of a past candle starts days after its close.
REAL_TIME_TRIGGERS = frozenset({"beat", "stream", "backfill"})


def milliseconds(value: float | None) -> str:
    """A duration held as float milliseconds, rounded: ``9 ms``, ``1,250 ms``, ``12.3 s``."""
    if value is None:
        return EMPTY
    if abs(value) < 10_000:
        return f"{value:,.0f} ms"
    return f"{value / 1000:,.1f} s"


def real_time_drift(value: float | None, trigger: str) -> str:
    """Candle close → start, shown only for runs started by the close itself."""
    return milliseconds(value) if trigger in REAL_TIME_TRIGGERS else EMPTY


def utc_seconds(value: datetime | None) -> str:
    """A list's timestamp: UTC, to the second."""
    return EMPTY if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def utc_milliseconds(value: datetime | None) -> str:
    """A detail page's timestamp: UTC, to the millisecond."""
    if value is None:
        return EMPTY
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d} UTC"


def first_line(text: str, limit: int = 90) -> SafeString | str:
    """A message's first line on one line of a list, cut at ``limit`` characters; the whole
    line in the tooltip (a list column wraps long text a few letters per line otherwise)."""
    line = next((part.strip() for part in (text or "").splitlines() if part.strip()), "")
    if not line:
        return EMPTY
    shown = line if len(line) <= limit else line[: limit - 1] + "…"
    return format_html('<span title="{}" style="white-space: nowrap">{}</span>', line, shown)


def plain_decimal(value: Decimal | None) -> str:
    """A stored decimal without its column's padding: ``2``, not ``2.000000000000``."""
    if value is None:
        return EMPTY
    return f"{value.normalize():f}" if value.is_finite() else str(value)


@cache  # one callable per field: the admin tells read-only fields by identity
def readable(model: type[Model], name: str, *, precise: bool) -> Callable[[Any], str] | None:
    """The display of the field ``name`` of ``model`` for a column or read-only field when
    Django's own reads badly: datetimes in UTC to the second (lists) or, ``precise``, to the
    millisecond (detail pages); decimals without padding. None for any other field."""
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None  # a method, a property or a lookup: displayed as it is
    render: Callable[[Any], str]
    if isinstance(field, DateTimeField):
        render = _unbroken(utc_milliseconds if precise else utc_seconds)
    elif isinstance(field, DecimalField):
        render = plain_decimal
    else:
        return None

    @admin.display(description=str(getattr(field, "verbose_name", name)), ordering=name)
    def show(obj: Any) -> str:
        return render(getattr(obj, name))

    show.__name__ = name  # its help text is the field's
    return show


def one_line(text: str) -> SafeString:
    """``text`` kept on one line (a narrow column breaks a date at its dashes)."""
    return format_html('<span style="white-space: nowrap">{}</span>', text)


def _unbroken(render: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: one_line(render(value))


def readable_fields(model: type[Model], names: Iterable[Any], *, precise: bool) -> list[Any]:
    """``names`` with each datetime and decimal field of ``model`` replaced by its display."""
    return [(readable(model, n, precise=precise) or n) if isinstance(n, str) else n for n in names]


class ReadableMixin:
    """Columns and read-only fields that read well: datetimes in UTC, to the second in lists
    and inlines, to the millisecond on a detail page (Django shows them to the minute, in the
    locale's words: "Dec. 2, 2026, 1:36 p.m."), and decimals without their column's padding.
    Only read-only fields change: an editable one keeps its widget."""

    model: type[Model]
    precise_times = True

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)  # type: ignore[misc]
        return readable_fields(self.model, shown, precise=False)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return readable_fields(self.model, readonly, precise=self.precise_times)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly: set[Any] | None = set(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            readonly = None  # a view-only page shows every field read-only
        return [
            (name, {**options, "fields": self._readable(options["fields"], readonly)})
            for name, options in super().get_fieldsets(request, obj)  # type: ignore[misc]
        ]

    def _readable(self, fields: Iterable[Any], readonly: set[Any] | None) -> list[Any]:
        return [
            self._readable(f, readonly)
            if isinstance(f, list | tuple)
            else readable_fields(self.model, [f], precise=self.precise_times)[0]
            if readonly is None or f in readonly
            else f
            for f in fields
        ]


class ReadOnlyAdmin(ReadableMixin, admin.ModelAdmin):
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


class ReadOnlyInline(ReadableMixin, admin.TabularInline):
    """The parent's most recent related rows, read-only, each linking to its own page.

    An inline has no pagination, and a popular strategy has thousands of subscribers and
    executions: only the latest ``limit`` rows are shown (by ``recent_order``).
    """

    precise_times = False  # a row of a table, as in a list
    # One line per row, its first cell the link (markets/templates/admin/edit_inline/).
    template = "admin/edit_inline/compact_tabular.html"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    limit = 20
    parent_field = ""  # the foreign key to the parent model
    recent_order: tuple[str, ...] = ("-pk",)
    related: tuple[str, ...] = ()  # select_related for the columns shown

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
        shown = queryset.filter(pk__in=list(recent)).order_by(*self.recent_order)
        return shown.select_related(*self.related) if self.related else shown


def pretty_json(value: Any) -> SafeString | str:
    if value in (None, "", {}, []):
        return EMPTY
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


def change_link_to(model: type[Model], pk: Any, label: str | None = None) -> SafeString | str:
    """A link to a row's page by its id alone (a list column that must not load the row)."""
    if pk is None:
        return EMPTY
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, label or f"#{pk}")


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
