"""Mounted at ``api/backtests/`` by config.urls (the bare list is mounted there too)."""

from django.urls import path

from backtests import views

urlpatterns = [
    path("<int:pk>", views.BacktestDetailView.as_view(), name="backtest-detail"),
    path("<int:pk>/chart.png", views.BacktestChartPngView.as_view(), name="backtest-chart-png"),
    path("<int:pk>/chart.svg", views.BacktestChartSvgView.as_view(), name="backtest-chart-svg"),
    path("<int:pk>/report.html", views.BacktestReportView.as_view(), name="backtest-report"),
]
