"""Mounted at ``api/strategies/`` by config.urls."""

from django.urls import path

from subscriptions import views

urlpatterns = [
    # <int:pk>/stats is mounted by trades.urls: it adds the followers' divergence.
    path("<int:pk>/subscribe", views.SubscribeView.as_view(), name="strategy-subscribe"),
    path("subscriptions", views.SubscriptionListView.as_view(), name="subscription-list"),
    # subscriptions/<int:pk> is mounted by trades.urls: its DELETE may close the position.
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
