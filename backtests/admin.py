"""Operator admin for backtests: records the backtest worker writes, so operators only read.

Besides the list and the page of each backtest, the admin serves a finished backtest's chart
and report (the API's are for token clients, the admin's for a staff session).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from backtests.charts import backtest_chart
from backtests.models import Backtest, BacktestTrade, StrategyRecord
from backtests.report import METRIC_SECTIONS
from backtests.selectors import backtest_quote, backtest_report, backtest_series
from backtests.views import FILE_POLICY
from core.admin_utils import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    change_link,
    fieldset_names,
    milliseconds,
    preformatted,
    pretty_json,
)
from strategies.models import Strategy
from subscriptions.admin import StrategyWithSubscribersAdmin

# The result columns can be megabytes (one value per candle): the list never loads them.
HEAVY_FIELDS = ("series", "skips", "lookahead", "logs", "code")
FILES = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "html": "text/html; charset=utf-8",
}
EMPTY = "—"


class BacktestTradeInline(ReadOnlyInline):
    model = BacktestTrade
    parent_field = "backtest"
    recent_order = ("entry_time", "id")
    limit = 100
    show_change_link = False  # a trade has no page of its own: these columns are all of it
    verbose_name_plural = "trades (the first 100; the report lists them all)"
    fields = (
        "side",
        "quantity",
        "entry_time",
        "entry_price",
        "entry_fee",
        "exit_time",
        "exit_price",
        "exit_fee",
        "pnl",
        "exit_reason",
    )
    readonly_fields = fields


@admin.register(Backtest)
class BacktestAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "owner",
        "market",
        "period",
        "status",
        "progress_text",
        "return_pct",
        "trade_count",
        "created_at",
    )
    list_filter = ("status", "method", "resolution", "exchange")
    search_fields = ("=id", "owner__username", "owner__email", "symbol", "strategy__name")
    ordering = ("-created_at", "-id")
    list_select_related = ("owner", "strategy")
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("owner", "status", "progress_text", "error_text", "files")}),
        (
            "What was tested",
            {"fields": ("strategy_link", "code_version", "source", "settings_json", "method")},
        ),
        (
            "Market and period",
            {
                "fields": (
                    "exchange",
                    "symbol",
                    "resolution",
                    "start",
                    "end",
                    "lookback",
                    "candles_total",
                    "candles_done",
                )
            },
        ),
        (
            "Sizing and costs",
            {"fields": ("capital", "risk_per_trade", "leverage", "fee_bps", "slippage_bps")},
        ),
        (
            "Result",
            {"fields": ("metrics_table", "warnings_list", "gaps_text", "skips_text")},
        ),
        ("Look-ahead check", {"classes": ("collapse",), "fields": ("lookahead_json",)}),
        (
            "Run",
            {
                "fields": (
                    "sandbox_isolation",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "duration",
                )
            },
        ),
        ("Captured logs", {"classes": ("collapse",), "fields": ("logs_text",)}),
    )
    readonly_fields = fieldset_names(fieldsets)
    inlines = (BacktestTradeInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Backtest]:
        # A subquery, not a join: grouping by every column would read the heavy ones too.
        trades = (
            BacktestTrade.objects.filter(backtest=OuterRef("pk"))
            .values("backtest")
            .annotate(total=Count("pk"))
            .values("total")
        )
        queryset = super().get_queryset(request).defer(*HEAVY_FIELDS)
        return queryset.annotate(trade_total=Coalesce(Subquery(trades), 0))

    # --- the list ---------------------------------------------------------------------------
    @admin.display(description="market", ordering="symbol")
    def market(self, backtest: Backtest) -> str:
        return f"{backtest.exchange} {backtest.symbol} {backtest.resolution}"

    @admin.display(description="period", ordering="start")
    def period(self, backtest: Backtest) -> str:
        return f"{backtest.start:%Y-%m-%d %H:%M} → {backtest.end:%Y-%m-%d %H:%M}"

    @admin.display(description="progress")
    def progress_text(self, backtest: Backtest) -> str:
        # Done is whole even when the period's first candles only warmed the strategy up.
        progress = 1.0 if backtest.status == Backtest.Status.DONE else backtest.progress
        return f"{progress:.0%} ({backtest.candles_done} of {backtest.candles_total})"

    @admin.display(description="return")
    def return_pct(self, backtest: Backtest) -> str:
        value = (backtest.metrics or {}).get("net_return_pct")
        return EMPTY if value is None else f"{value} %"

    @admin.display(description="trades", ordering="trade_total")
    def trade_count(self, backtest: Any) -> int:
        return int(backtest.trade_total)

    # --- one backtest -----------------------------------------------------------------------
    @admin.display(description="duration")
    def duration(self, backtest: Backtest) -> str:
        return milliseconds(backtest.duration_ms)

    @admin.display(description="error")
    def error_text(self, backtest: Backtest) -> SafeString | str:
        return preformatted(backtest.error)

    @admin.display(description="chart and report")
    def files(self, backtest: Backtest) -> SafeString | str:
        if backtest.status != Backtest.Status.DONE:
            return f"once it is done (it is {backtest.status})"
        links = [(_file_url(backtest, name), label) for name, label in FILE_LINKS]
        return format_html_join(" · ", '<a href="{}" target="_blank">{}</a>', links)

    @admin.display(description="strategy")
    def strategy_link(self, backtest: Backtest) -> SafeString | str:
        if backtest.strategy is None:
            return "code sent with the request" if backtest.code else "deleted since"
        return change_link(backtest.strategy)

    @admin.display(description="code sent")
    def source(self, backtest: Backtest) -> SafeString | str:
        return preformatted(backtest.code)

    @admin.display(description="settings")
    def settings_json(self, backtest: Backtest) -> SafeString | str:
        return pretty_json(backtest.strategy_settings)

    @admin.display(description="figures")
    def metrics_table(self, backtest: Backtest) -> SafeString | str:
        return metrics_html(backtest.metrics or {}, currency=backtest_quote(backtest=backtest))

    @admin.display(description="warnings")
    def warnings_list(self, backtest: Backtest) -> SafeString | str:
        warnings = (backtest.metrics or {}).get("warnings") or []
        if not warnings:
            return EMPTY
        items = format_html_join("", "<li>{}</li>", ((str(w),) for w in warnings))
        return format_html('<ul style="margin: 0">{}</ul>', items)

    @admin.display(description="gaps in the candles")
    def gaps_text(self, backtest: Backtest) -> SafeString | str:
        lines = [f"{g['missing']} missing after {g['after']}" for g in backtest.gaps or []]
        return preformatted("\n".join(lines))

    @admin.display(description="skipped signals")
    def skips_text(self, backtest: Backtest) -> SafeString | str:
        skips = backtest.skips or []
        shown = [f"{s['time']} {s['signal']}: {s['reason']}" for s in skips[:20]]
        more = len(skips) - len(shown)
        return preformatted("\n".join(shown + ([f"… and {more} more"] if more > 0 else [])))

    @admin.display(description="look-ahead check")
    def lookahead_json(self, backtest: Backtest) -> SafeString | str:
        return pretty_json(backtest.lookahead)

    @admin.display(description="logs")
    def logs_text(self, backtest: Backtest) -> SafeString | str:
        return preformatted(backtest.logs)

    # --- its files --------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        files = [
            path(
                f"<int:object_id>/{name}",
                view(self.file_view),
                {"name": name},
                name=f"backtests_backtest_{name.replace('.', '_')}",
            )
            for name, _ in FILE_LINKS
        ]
        return files + super().get_urls()

    def file_view(self, request: HttpRequest, object_id: int, name: str) -> HttpResponse:
        backtest = get_object_or_404(Backtest, pk=object_id)
        if not self.has_view_permission(request, backtest):
            return HttpResponse("Not allowed.", status=403, content_type="text/plain")
        if backtest.status != Backtest.Status.DONE:
            message = f"Backtest #{backtest.pk} is {backtest.status}: no chart or report."
            return HttpResponse(message, status=409, content_type="text/plain")
        response = HttpResponse(_file(backtest, name), content_type=FILES[name.split(".")[-1]])
        response["Content-Security-Policy"] = FILE_POLICY
        return response


FILE_LINKS = (
    ("chart.png", "chart (PNG)"),
    ("chart.svg", "chart (SVG)"),
    ("report.html", "report"),
)


def _file_url(backtest: Backtest, name: str) -> str:
    return reverse(f"admin:backtests_backtest_{name.replace('.', '_')}", args=[backtest.pk])


def _file(backtest: Backtest, name: str) -> bytes | str:
    if name == "report.html":
        return backtest_report(backtest=backtest)
    return backtest_chart(series=backtest_series(backtest=backtest), fmt=name.split(".")[-1])


def metrics_html(metrics: dict[str, Any], *, currency: str) -> SafeString | str:
    """The figures under the report's headings and labels, each with its unit."""
    sections = []
    for heading, entries in METRIC_SECTIONS:
        shown = [
            (label, _figure(metrics[key], unit, currency))
            for key, label, unit in entries
            if key in metrics
        ]
        if shown:
            rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", shown)
            sections.append(format_html('<tr><th colspan="2">{}</th></tr>{}', heading, rows))
    if not sections:
        return EMPTY
    body = format_html_join("", "{}", ((section,) for section in sections))
    return format_html('<table style="margin: 0">{}</table>', body)


def _figure(value: Any, unit: str, currency: str) -> str:
    if value is None or value == "":
        return EMPTY
    if unit == "pct":
        return f"{_number(value)} %"
    if unit == "money":
        return f"{value} {currency}"
    if unit == "duration":
        return _duration(value)
    if unit == "time":
        return _time(value)
    return str(value)


def _number(value: Any) -> str:
    try:
        return f"{Decimal(str(value)):.2f}"
    except InvalidOperation:
        return str(value)


def _time(value: Any) -> str:
    try:
        return f"{datetime.fromisoformat(str(value)).astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return str(value)


def _duration(seconds: Any) -> str:
    try:
        hours, rest = divmod(int(seconds), 3600)
    except (TypeError, ValueError):
        return str(seconds)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


@admin.register(StrategyRecord)
class StrategyRecordAdmin(ReadOnlyAdmin):
    """Each strategy's reference paper account, as the listing's figures were last refreshed."""

    list_display = (
        "strategy_link",
        "return_7d_pct",
        "return_30d_pct",
        "return_90d_pct",
        "return_total_pct",
        "max_drawdown_pct",
        "sharpe_ratio",
        "win_rate_pct",
        "trades",
        "subscribers",
        "last_close",
        "figures_at",
    )
    search_fields = ("strategy__name", "=strategy__id")
    ordering = ("-return_30d_pct", "strategy_id")
    list_select_related = ("strategy",)
    fieldsets = (
        (
            None,
            {"fields": ("strategy_link", "started_at", "last_close", "realized", "position_json")},
        ),
        (
            "Figures",
            {
                "fields": (
                    "return_7d_pct",
                    "return_30d_pct",
                    "return_90d_pct",
                    "return_total_pct",
                    "max_drawdown_pct",
                    "sharpe_ratio",
                    "win_rate_pct",
                    "trades",
                    "subscribers",
                    "figures_at",
                )
            },
        ),
    )
    readonly_fields = fieldset_names(fieldsets)

    def get_queryset(self, request: HttpRequest) -> QuerySet[StrategyRecord]:
        return super().get_queryset(request).defer("strategy__code")

    @admin.display(description="strategy", ordering="strategy__name")
    def strategy_link(self, record: StrategyRecord) -> SafeString | str:
        return change_link(record.strategy, f"#{record.strategy_id} {record.strategy.name}")

    @admin.display(description="sharpe", ordering="sharpe")
    def sharpe_ratio(self, record: StrategyRecord) -> str:
        return EMPTY if record.sharpe is None else f"{record.sharpe:.2f}"

    @admin.display(description="open position")
    def position_json(self, record: StrategyRecord) -> SafeString | str:
        return pretty_json(record.position)


def _after(names: tuple[str, ...], anchor: str, added: tuple[str, ...]) -> tuple[str, ...]:
    at = names.index(anchor) + 1
    return (*names[:at], *added, *names[at:])


# The strategy list as operators read it: strategies and subscriptions sit below the records,
# so this layer adds each strategy's record (its reference account's 30-day return).
admin.site.unregister(Strategy)


@admin.register(Strategy)
class StrategyWithRecordAdmin(StrategyWithSubscribersAdmin):
    list_display = _after(
        StrategyWithSubscribersAdmin.list_display, "failures_24h", ("return_30d", "record_trades")
    )

    def get_list_select_related(self, request: HttpRequest) -> tuple[str, ...]:
        return ("owner", "record")

    @admin.display(description="30-day return", ordering="record__return_30d_pct")
    def return_30d(self, strategy: Strategy) -> str:
        record = _record(strategy)
        value = record.return_30d_pct if record else None
        return EMPTY if value is None else f"{value:.2f} %"

    @admin.display(description="record trades", ordering="record__trades")
    def record_trades(self, strategy: Strategy) -> str:
        record = _record(strategy)
        return str(record.trades) if record else EMPTY


def _record(strategy: Strategy) -> StrategyRecord | None:
    try:
        return strategy.record
    except StrategyRecord.DoesNotExist:
        return None  # no real-time close followed yet
