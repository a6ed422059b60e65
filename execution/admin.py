"""The operator overview: one admin page with the platform's last hour and day.

Executions and failures, orders by status, rejected orders, paused subscriptions and why,
and the markets the candle streamer watches. Staff only (``admin.site.admin_view``); the
figures come from ``execution.selectors``, each link opens the admin list behind a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from core.admin_utils import plain_decimal, utc_seconds
from execution.selectors import DAY, HOUR, Overview, StatusCount, operator_overview
from strategies.models import StrategyExecution
from subscriptions.models import StrategySubscription
from trades.models import Order

# The admin index links the overview (templates/admin/operator_index.html).
admin.site.index_template = "admin/operator_index.html"


@dataclass(frozen=True)
class CountRow:
    status: str
    hour: int
    day: int
    hour_url: str
    day_url: str


def overview_view(request: HttpRequest) -> TemplateResponse:
    overview = operator_overview(now=timezone.now())
    context = {
        **admin.site.each_context(request),
        "title": "Operator overview",
        "overview": overview,
        **_tables(overview),
    }
    return TemplateResponse(request, "admin/execution/overview.html", context)


def _tables(overview: Overview) -> dict[str, Any]:
    now = overview.now
    return {
        "generated_at": utc_seconds(now),
        "execution_rows": _count_rows(StrategyExecution, "started_at", overview.executions, now),
        "order_rows": _count_rows(Order, "created_at", overview.orders, now),
        "failed_rows": [
            (e, utc_seconds(e.started_at), e.error.splitlines()[0] if e.error else "")
            for e in overview.failed_executions
        ],
        "rejected_rows": [
            (
                o,
                utc_seconds(o.created_at),
                f"{o.side} {plain_decimal(o.amount)} {o.symbol}",
                o.error[:300],
            )
            for o in overview.rejected_orders
        ],
        "paused_rows": [
            (s, utc_seconds(s.updated_at), s.status_reason) for s in overview.paused_subscriptions
        ],
        "market_rows": [(m, utc_seconds(m.last_close)) for m in overview.markets],
        "failed_url": _list_url(
            StrategyExecution, status__exact="failed", started_at__gte=_since(now, DAY)
        ),
        "rejected_url": _list_url(Order, status__exact="rejected"),
        "paused_url": _list_url(StrategySubscription, status__exact="paused"),
    }


def _count_rows(
    model: type[Model], field: str, counts: list[StatusCount], now: datetime
) -> list[CountRow]:
    def url(status: str, window: timedelta) -> str:
        return _list_url(model, status__exact=status, **{f"{field}__gte": _since(now, window)})

    return [
        CountRow(c.status, c.hour, c.day, url(c.status, HOUR), url(c.status, DAY)) for c in counts
    ]


def _since(now: datetime, window: timedelta) -> str:
    return (now - window).isoformat(timespec="seconds")


def _list_url(model: type[Model], **filters: str) -> str:
    meta = model._meta
    base = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    return f"{base}?{urlencode(filters)}"
