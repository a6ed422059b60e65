"""Mounted at ``api/strategies/`` by config.urls."""

from django.urls import path

from subscriptions import views

urlpatterns = [
    path("<int:pk>/stats", views.StrategyStatsView.as_view(), name="strategy-stats"),
    path("<int:pk>/subscribe", views.SubscribeView.as_view(), name="strategy-subscribe"),
    path("subscriptions", views.SubscriptionListView.as_view(), name="subscription-list"),
    path(
        "subscriptions/<int:pk>", views.SubscriptionDetailView.as_view(), name="subscription-detail"
    ),
    path(
        "subscriptions/<int:pk>/pause",
        views.SubscriptionPauseView.as_view(),
        name="subscription-pause",
    ),
    path(
        "subscriptions/<int:pk>/resume",
        views.SubscriptionResumeView.as_view(),
        name="subscription-resume",
    ),
]

# Mounted at ``api/credentials/`` by config.urls (the bare list is mounted there too).
credential_urlpatterns = [
    path("<int:pk>", views.CredentialDetailView.as_view(), name="credential-detail"),
]
