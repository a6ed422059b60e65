"""Emails for the events a user asked for (NotificationPreference), through Django's email
backend (EMAIL_URL; the console backend when unset). The notification is the email's outbox:
``emailed_at`` is set once it went out, so a redelivered task does not send it again."""

from __future__ import annotations

from django.core.mail import send_mail
from django.utils import timezone

from notifications.models import Notification, NotificationEvent, NotificationPreference


def notification_email_send(*, notification_id: int) -> bool:
    """Email this notification to its user, unless it went out already, the user has no
    address, or the user does not want this event by email now (the preference is read again
    here: one turned off after the email was queued is obeyed). Returns True when it was sent
    now."""
    notification = (
        Notification.objects.select_related("user")
        .filter(pk=notification_id, emailed_at__isnull=True)
        .first()
    )
    if notification is None or not notification.user.email:
        return False
    if not _wanted(notification):
        return False
    subject, body = notification_email_text(notification)
    send_mail(subject, body, None, [notification.user.email])
    Notification.objects.filter(pk=notification.pk, emailed_at__isnull=True).update(
        emailed_at=timezone.now()
    )
    return True


def _wanted(notification: Notification) -> bool:
    events = (
        NotificationPreference.objects.filter(user_id=notification.user_id)
        .values_list("email_events", flat=True)
        .first()
    )
    return notification.event in (events or ())


def notification_email_text(notification: Notification) -> tuple[str, str]:
    """Subject and plain-text body: the event and its payload, one field a line."""
    label = str(NotificationEvent(notification.event).label)
    lines = [f"{label}.", ""]
    lines += [f"{name}: {value}" for name, value in sorted(notification.payload.items())]
    at = f"{notification.created_at:%Y-%m-%d %H:%M:%S} UTC"
    lines += ["", f"({notification.event}, {notification.key}, {at})"]
    return f"[signalfan] {label}", "\n".join(lines) + "\n"
