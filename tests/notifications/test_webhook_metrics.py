"""Webhook delivery attempts are counted by outcome in Prometheus."""

from __future__ import annotations

import time

import pytest

from config.celery_app import app
from config.metrics import PRIORITY_STEPS, metrics_registry
from notifications.models import Delivery
from notifications.services import notifications_record
from notifications.webhooks import delivery_attempt
from tests.api.helpers import client_for
from tests.notifications.test_webhooks import _fill

OUTCOMES = ("delivered", "retrying", "failed")
UNTAKEN = "webhook-metrics-tests"  # a queue no worker takes: the attempts are this test's


@pytest.fixture
def untaken_queue(settings):
    settings.NOTIFICATIONS_QUEUE = UNTAKEN
    yield
    with app.connection_for_write() as connection:
        connection.default_channel.client.delete(*(UNTAKEN + step for step in PRIORITY_STEPS))


def _attempts() -> dict[str, float]:
    registry = metrics_registry()
    return {
        outcome: registry.get_sample_value("signalfan_webhook_attempts_total", {"outcome": outcome})
        or 0.0
        for outcome in OUTCOMES
    }


@pytest.mark.django_db(transaction=True)
def test_each_attempt_is_counted_by_the_status_it_left_the_delivery_in(
    user, receiver_for, untaken_queue
):
    # given a webhook whose receiver fails once, then answers 200, and a delivery for it
    receiver = receiver_for([500, 200])
    response = client_for(user).post(
        "/api/webhooks", {"url": receiver.url, "events": ["trade.filled"]}, format="json"
    )
    assert response.status_code == 201
    notifications_record(notices=[_fill(user.pk)])
    delivery = Delivery.objects.get()
    before = _attempts()

    # when it is attempted until delivered
    first = delivery_attempt(delivery_id=delivery.pk)
    time.sleep(0.3)  # the test settings' backoff
    second = delivery_attempt(delivery_id=delivery.pk)

    # then one attempt counts as retrying, one as delivered
    assert (first.status, second.status) == ("retrying", "delivered")
    after = _attempts()
    assert {o: after[o] - before[o] for o in OUTCOMES} == {
        "delivered": 1,
        "retrying": 1,
        "failed": 0,
    }
