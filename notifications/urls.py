"""Mounted at ``api/`` by config.urls."""

from django.urls import path

from notifications import views

urlpatterns = [
    path("webhooks", views.WebhookListCreateView.as_view(), name="webhook-list"),
    path("webhooks/<int:pk>", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        "webhooks/<int:pk>/deliveries",
        views.WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path("notifications", views.NotificationListView.as_view(), name="notification-list"),
    path(
        "notifications/preferences",
        views.NotificationPreferenceView.as_view(),
        name="notification-preferences",
    ),
]
