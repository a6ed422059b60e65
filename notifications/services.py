"""Recording notifications: the one entry point every app calls when a user should hear of
something. Producers call it inside their own transaction, so a notification exists exactly
when the change it reports was committed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from notifications.models import Notification, NotificationEvent


@dataclass(frozen=True)
class Notice:
    user_id: int
    event: NotificationEvent
    # What happened, unique per user: e.g. f"trade.filled:{trade.pk}".
    key: str
    payload: dict[str, Any] = field(default_factory=dict)


def notifications_record(*, notices: Sequence[Notice]) -> int:
    """Record these notices in one INSERT; a (user, key) already recorded is left as it was.

    Returns the number of notices given (a conflict is not an error: it is a retry)."""
    if not notices:
        return 0
    Notification.objects.bulk_create(
        [
            Notification(user_id=n.user_id, event=n.event, key=n.key, payload=n.payload)
            for n in notices
        ],
        ignore_conflicts=True,
    )
    return len(notices)
