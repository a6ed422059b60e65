import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.emails import notification_email_send
from notifications.models import Delivery, Notification, NotificationEvent
from notifications.services import (
    Notice,
    notification_preference_set,
    notifications_record,
    webhook_create,
)
from notifications.webhooks import delivery_body
from strategies.models import StrategyExecution
from tests.api.helpers import client_for, field_errors, make_credential
from tests.factories import StrategyFactory, UserFactory, subscribe
from trades.models import Trade
from trades.services import fanout_process

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


# --- the fan-out ----------------------------------------------------------------------------
CLOSE = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


def _long_signal(strategy) -> StrategyExecution:
    return StrategyExecution.objects.create(
        strategy=strategy,
        interval_start=CLOSE - timedelta(minutes=5),
        interval_end=CLOSE,
        status=StrategyExecution.Status.SUCCESS,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        signal={"signal": "LONG", "price": 0.05},
        close_price=Decimal("0.05"),
    )


def test_a_fanned_out_fill_is_one_notification_per_subscriber_and_one_delivery_per_webhook(
    settings, django_capture_on_commit_callbacks
):
    # given three paper subscribers: the first with two webhooks for fills, the second with
    # one for closes only, the third asking for fills by email
    settings.SIGNAL_MAX_AGE_S = 10**9
    strategy = StrategyFactory()
    subs = [subscribe(strategy) for _ in range(3)]
    first, second, third = (s.user for s in subs)
    secrets = [
        webhook_create(user=first, url="https://one.example/hook", events=["trade.filled"])[1],
        webhook_create(user=first, url="https://two.example/hook", events=["trade.filled"])[1],
        webhook_create(user=second, url="https://three.example/hook", events=["trade.closed"])[1],
    ]
    make_credential(first)  # keys of the first subscriber's, which no payload may carry
    notification_preference_set(user=third, email_events=["trade.filled"])

    # when a LONG signal fans out to them in one batch
    execution = _long_signal(strategy)
    with django_capture_on_commit_callbacks():
        fanout_process(execution_id=execution.pk, subscription_ids=[s.pk for s in subs])

    # then each subscriber has one notification of their own fill
    trades = {t.subscription_id: t for t in Trade.objects.filter(status="open")}
    notices = list(Notification.objects.order_by("user_id"))
    assert [(n.user_id, n.event, n.key) for n in notices] == [
        (s.user_id, "trade.filled", f"trade.filled:{trades[s.pk].pk}") for s in subs
    ]
    for sub, notice in zip(subs, notices, strict=True):
        assert notice.payload["subscription_id"] == sub.pk
        assert notice.payload["price"] == str(trades[sub.pk].entry_price)
        assert notice.payload["currency"] == "BTC"
    # and one delivery per webhook that takes fills: the first subscriber's two
    deliveries = Delivery.objects.select_related("webhook", "notification")
    assert sorted(d.webhook.url for d in deliveries) == [
        "https://one.example/hook",
        "https://two.example/hook",
    ]
    assert {d.notification.user_id for d in deliveries} == {first.pk}
    # and the third's email goes out once
    emailed = Notification.objects.get(user=third)
    assert notification_email_send(notification_id=emailed.pk) is True
    assert notification_email_send(notification_id=emailed.pk) is False
    assert [(m.to, m.subject) for m in mail.outbox] == [([third.email], "[signalfan] Trade filled")]
    assert f"price: {trades[subs[2].pk].entry_price}" in mail.outbox[0].body
    # and no secret or key is in any of it
    sent = [delivery_body(d).decode() for d in deliveries] + [mail.outbox[0].body]
    text = json.dumps([n.payload for n in notices]) + "".join(sent)
    assert not any(s in text for s in [*secrets, "AKIA-plain-key-1234", "very-secret-value-XYZ"])


def test_a_batch_costs_the_same_few_queries_whatever_its_size(django_capture_on_commit_callbacks):
    # given 40 users without webhooks and 40 with one each
    quiet = [UserFactory() for _ in range(40)]
    hooked = [UserFactory() for _ in range(40)]
    for user in hooked:
        webhook_create(user=user, url="https://example.com/hook", events=["trade.closed"])

    def closes(users, run: int) -> list[Notice]:
        event = NotificationEvent.TRADE_CLOSED
        return [Notice(user_id=u.pk, event=event, key=f"trade.closed:{run}") for u in users]

    # when a batch is recorded for each group
    with CaptureQueriesContext(connection) as without, django_capture_on_commit_callbacks():
        notifications_record(notices=closes(quiet, 1))
    with CaptureQueriesContext(connection) as with_hooks, django_capture_on_commit_callbacks():
        notifications_record(notices=closes(hooked, 2))

    # then users without webhooks cost the insert and the look-ups of webhooks and emails,
    # and with webhooks a few more, not one per user
    assert len(without) <= 3
    assert len(with_hooks) <= 6
    assert Delivery.objects.filter(status="pending").count() == 40


def test_email_preferences_are_set_through_the_api(user):
    # given a user
    api = client_for(user)
    # when they ask for closes and pauses by email, with an unknown event first
    refused = api.put(
        "/api/notifications/preferences", {"email_events": ["trade.closed", "bogus"]}, format="json"
    )
    accepted = api.put(
        "/api/notifications/preferences",
        {"email_events": ["trade.closed", "subscription.paused", "trade.closed"]},
        format="json",
    )
    # then the unknown one is a 400, the others are kept, once each
    assert refused.status_code == 400 and set(field_errors(refused)) == {"email_events.1"}
    assert accepted.status_code == 200
    shown = api.get("/api/notifications/preferences").json()
    assert shown == {"email_events": ["subscription.paused", "trade.closed"]}


def test_the_inbox_lists_a_users_own_notifications_newest_first(user, other_user):
    # given notices for two users
    for n in range(3):
        notifications_record(
            notices=[Notice(user_id=user.pk, event=NotificationEvent.TRADE_FILLED, key=f"k{n}")]
        )
    notifications_record(
        notices=[Notice(user_id=other_user.pk, event=NotificationEvent.TRADE_FILLED, key="x")]
    )
    # when the first reads their inbox, a page of two
    page = client_for(user).get("/api/notifications?page_size=2").json()
    # then it holds their own, newest first
    assert page["count"] == 3
    assert [n["key"] for n in page["results"]] == ["k2", "k1"]


def test_email_goes_out_only_for_the_events_the_user_asked_for_when_it_is_sent(
    user, django_capture_on_commit_callbacks
):
    # given a user who wants closes by email, not fills
    notification_preference_set(user=user, email_events=["trade.closed"])

    def notice(event: NotificationEvent, key: str) -> Notification:
        with django_capture_on_commit_callbacks():
            notifications_record(notices=[Notice(user_id=user.pk, event=event, key=key)])
        return Notification.objects.get(user=user, key=key)

    fill = notice(NotificationEvent.TRADE_FILLED, "trade.filled:1")
    close = notice(NotificationEvent.TRADE_CLOSED, "trade.closed:1")
    late = notice(NotificationEvent.TRADE_CLOSED, "trade.closed:2")

    # when the emails are sent, the user having turned closes off before the last one went
    sent_fill = notification_email_send(notification_id=fill.pk)
    sent_close = notification_email_send(notification_id=close.pk)
    notification_preference_set(user=user, email_events=[])
    sent_late = notification_email_send(notification_id=late.pk)

    # then only the close they still wanted went out, once
    assert (sent_fill, sent_close, sent_late) == (False, True, False)
    assert [(m.to, m.subject) for m in mail.outbox] == [([user.email], "[signalfan] Trade closed")]
    emailed = Notification.objects.exclude(emailed_at=None).values_list("key", flat=True)
    assert list(emailed) == ["trade.closed:1"]


def test_a_close_is_notified_to_its_subscriber_with_its_pnl(
    settings, django_capture_on_commit_callbacks
):
    # given a paper subscriber holding a long entered at 0.05, with a webhook for closes
    settings.SIGNAL_MAX_AGE_S = 10**9
    strategy = StrategyFactory()
    sub = subscribe(strategy)
    webhook_create(user=sub.user, url="https://one.example/hook", events=["trade.closed"])
    entry = _long_signal(strategy)
    fanout_process(execution_id=entry.pk, subscription_ids=[sub.pk])

    # when the strategy exits at 0.06, and the batch is delivered a second time
    exit_execution = StrategyExecution.objects.create(
        strategy=strategy,
        interval_start=CLOSE,
        interval_end=CLOSE + timedelta(minutes=5),
        status=StrategyExecution.Status.SUCCESS,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        signal={"signal": "EXIT_LONG", "price": 0.06},
        close_price=Decimal("0.06"),
    )
    with django_capture_on_commit_callbacks():
        for _ in range(2):
            fanout_process(execution_id=exit_execution.pk, subscription_ids=[sub.pk])

    # then the subscriber is told once, with the trade's prices, fees and PnL, and so is
    # their webhook
    trade = Trade.objects.get(subscription=sub)
    assert trade.status == "closed" and trade.pnl is not None and trade.pnl > 0
    notice = Notification.objects.get(user=sub.user, event="trade.closed")
    assert notice.key == f"trade.closed:{trade.pk}"
    expected = {
        "subscription_id": sub.pk,
        "trade_id": trade.pk,
        "entry_price": str(trade.entry_price),
        "exit_price": str(trade.exit_price),
        "fees": str(trade.fees),
        "pnl": str(trade.pnl),
        "reason": "exit signal",
        "currency": "BTC",
    }
    assert expected.items() <= notice.payload.items(), notice.payload
    delivery = Delivery.objects.select_related("notification").get()
    assert json.loads(delivery_body(delivery))["payload"]["pnl"] == str(trade.pnl)
