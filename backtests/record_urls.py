"""Mounted at ``api/strategies/`` by config.urls: a strategy's track record."""

from django.urls import path, re_path

from backtests import record_views

urlpatterns = [
    path(
        "<int:pk>/performance",
        record_views.StrategyPerformanceView.as_view(),
        name="strategy-performance",
    ),
    re_path(
        r"^(?P<pk>[0-9]+)/performance\.(?P<fmt>png|svg)$",
        record_views.StrategyPerformanceChartView.as_view(),
        name="strategy-performance-chart",
    ),
]
