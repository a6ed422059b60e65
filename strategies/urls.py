"""Mounted at ``api/strategies/`` by config.urls (the bare list is mounted there too)."""

from django.urls import path

from strategies import views

urlpatterns = [
    path("deploy", views.StrategyDeployView.as_view(), name="strategy-deploy"),
    path("<int:pk>", views.StrategyDetailView.as_view(), name="strategy-detail"),
    path("<int:pk>/code", views.StrategyCodeView.as_view(), name="strategy-code"),
    path("<int:pk>/settings", views.StrategySettingsView.as_view(), name="strategy-settings"),
    path(
        "<int:pk>/executions",
        views.StrategyExecutionListView.as_view(),
        name="strategy-executions",
    ),
]
