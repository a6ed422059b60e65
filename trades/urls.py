"""Mounted at ``api/strategies/`` by config.urls."""

from django.urls import path

from trades import views

urlpatterns = [
    # The strategy's statistics with its followers' divergence (trades sits above the
    # subscriptions app, whose view it extends).
    path("<int:pk>/stats", views.StrategyStatsView.as_view(), name="strategy-stats"),
    path(
        "subscriptions/<int:pk>/divergence",
        views.SubscriptionDivergenceReportView.as_view(),
        name="subscription-divergence",
    ),
    path(
        "subscriptions/<int:pk>", views.SubscriptionDetailView.as_view(), name="subscription-detail"
    ),
    path(
        "subscriptions/<int:pk>/close",
        views.SubscriptionCloseView.as_view(),
        name="subscription-close",
    ),
    path(
        "subscriptions/<int:pk>/resync",
        views.SubscriptionResyncView.as_view(),
        name="subscription-resync",
    ),
    path(
        "subscriptions/<int:pk>/divergences",
        views.SubscriptionDivergenceListView.as_view(),
        name="subscription-divergences",
    ),
    path(
        "subscriptions/<int:pk>/protection-trips",
        views.SubscriptionProtectionTripListView.as_view(),
        name="subscription-protection-trips",
    ),
    path(
        "subscriptions/<int:pk>/stats",
        views.SubscriptionStatsView.as_view(),
        name="subscription-stats",
    ),
    path(
        "subscriptions/<int:pk>/equity",
        views.SubscriptionEquityView.as_view(),
        name="subscription-equity",
    ),
    path(
        "subscriptions/<int:pk>/equity.png",
        views.SubscriptionEquityPngView.as_view(),
        name="subscription-equity-png",
    ),
    path(
        "subscriptions/<int:pk>/equity.svg",
        views.SubscriptionEquitySvgView.as_view(),
        name="subscription-equity-svg",
    ),
    path(
        "subscriptions/<int:pk>/trades",
        views.SubscriptionTradeListView.as_view(),
        name="subscription-trades",
    ),
    path(
        "subscriptions/<int:pk>/orders",
        views.SubscriptionOrderListView.as_view(),
        name="subscription-orders",
    ),
]
