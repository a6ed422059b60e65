import pytest

from notifications.models import Notification, NotificationEvent
from notifications.services import Notice, notifications_record

pytestmark = pytest.mark.django_db


def test_a_notice_recorded_twice_is_one_notification(user, other_user):
    # given the same fill reported twice (a retried fan-out) and once to another user
    notice = Notice(
        user_id=user.pk,
        event=NotificationEvent.TRADE_FILLED,
        key="trade.filled:7",
        payload={"a": 1},
    )
    other = Notice(
        user_id=other_user.pk, event=NotificationEvent.TRADE_FILLED, key="trade.filled:7"
    )

    # when both are recorded, then the first again
    notifications_record(notices=[notice, other])
    notifications_record(notices=[notice])

    # then each user has it once
    rows = list(Notification.objects.order_by("user_id").values_list("user_id", "key", "payload"))
    assert rows == [(user.pk, "trade.filled:7", {"a": 1}), (other_user.pk, "trade.filled:7", {})]
