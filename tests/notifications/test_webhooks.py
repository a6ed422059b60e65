"""Webhook deliveries against a real receiver on loopback: signed, retried, disabled, refused.

Deliveries go through real Celery workers (retries paced by the test settings' short backoff),
except where the behaviour is the service's own (the address check).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from notifications.models import Delivery, NotificationEvent, Webhook
from notifications.services import Notice, notifications_record, webhook_create
from notifications.webhooks import address_refusal, delivery_attempt, webhook_post
from tests.api.helpers import client_for, field_errors
from tests.notifications.receiver import Received
from tests.workers import WorkerPool, wait_for

KILL_QUEUE = "notifications-kill-tests"


def _verifies(request: Received, secret: str) -> bool:
    """What a receiver does: recompute the signature over timestamp + "." + body."""
    timestamp = request.headers["x-signalfan-timestamp"]
    signed = timestamp.encode() + b"." + request.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers["x-signalfan-signature"])


def _fill(user_id: int, trade_id: int = 1) -> Notice:
    return Notice(
        user_id=user_id,
        event=NotificationEvent.TRADE_FILLED,
        key=f"trade.filled:{trade_id}",
        payload={"trade_id": trade_id, "price": Decimal("0.05")},
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_signed_and_retried_after_500s_until_it_is_delivered(
    celery_workers, user, receiver_for
):
    # given a webhook for fills whose receiver answers 500 twice, then 200
    receiver = receiver_for([500, 500, 200])
    api = client_for(user)
    created = api.post(
        "/api/webhooks", {"url": receiver.url, "events": ["trade.filled"]}, format="json"
    ).json()

    # when a fill is recorded (and committed)
    notifications_record(notices=[_fill(user.pk)])

    # then a worker delivers it on the third attempt
    delivery = wait_for(
        lambda: Delivery.objects.filter(status="delivered").first(), timeout=60, what="delivery"
    )
    assert [r.answered for r in receiver.requests] == [500, 500, 200]
    assert delivery.attempts == 3
    assert [a["response_code"] for a in delivery.attempt_log] == [500, 500, 200]
    assert delivery.attempt_log[0]["error"] == "HTTP 500: no"
    # and every attempt is the same signed document, with the same idempotency key
    for request in receiver.requests:
        assert request.path == "/hooks/signalfan?via=test"
        assert _verifies(request, created["secret"])
        assert not _verifies(request, "whsec_another-secret")
        assert request.headers["idempotency-key"] == str(delivery.idempotency_key)
        assert request.headers["x-signalfan-event"] == "trade.filled"
        assert created["secret"] not in request.body.decode()
    body = json.loads(receiver.requests[0].body)
    assert body["id"] == str(delivery.idempotency_key)
    assert (body["event"], body["key"]) == ("trade.filled", "trade.filled:1")
    assert body["payload"] == {"trade_id": 1, "price": "0.05"}
    # and the owner reads the log of it
    listed = api.get(f"/api/webhooks/{created['id']}/deliveries").json()["results"]
    assert [(d["status"], d["attempts"], d["response_code"]) for d in listed] == [
        ("delivered", 3, 200)
    ]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_webhook_whose_deliveries_keep_failing_is_disabled_with_the_reason(
    celery_workers, user, receiver_for
):
    # given a webhook whose receiver always answers 500 (the tests allow 3 attempts a
    # delivery and disable a webhook after 2 failed deliveries in a row)
    receiver = receiver_for([500])
    webhook, _ = webhook_create(user=user, url=receiver.url, events=["trade.filled"])

    # when two fills are recorded
    notifications_record(notices=[_fill(user.pk, 1), _fill(user.pk, 2)])

    # then each delivery fails after its attempts, and the webhook is disabled, saying why
    wait_for(
        lambda: Delivery.objects.filter(status="failed").count() == 2, timeout=60, what="failures"
    )
    assert len(receiver.requests) == 2 * django_settings.WEBHOOK_MAX_ATTEMPTS
    shown = client_for(user).get(f"/api/webhooks/{webhook.pk}").json()
    assert shown["is_active"] is False and shown["consecutive_failures"] == 2
    assert shown["disabled_reason"].startswith("disabled after 2 failed deliveries in a row")
    assert "HTTP 500" in shown["disabled_reason"]
    # and a disabled webhook gets no more deliveries
    notifications_record(notices=[_fill(user.pk, 3)])
    assert Delivery.objects.count() == 2


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_leaves_one_delivery_recorded(user, receiver_for, settings):
    # given a receiver that holds the first request it gets, and a worker on a queue of its
    # own that waits for the answer as long as it takes
    receiver = receiver_for([200], hold_first=True)
    settings.NOTIFICATIONS_QUEUE = KILL_QUEUE
    webhook_create(user=user, url=receiver.url, events=["trade.filled"])
    first = WorkerPool(concurrency=1, queues=[KILL_QUEUE], env={"WEBHOOK_TIMEOUT_S": "60"})
    # the worker taking over: the killed one's task back after 3 s, its claim expired after 3 s
    takeover = {"TEST_VISIBILITY_TIMEOUT_S": "3", "WEBHOOK_SEND_LEASE_S": "3"}
    second = WorkerPool(concurrency=1, queues=[KILL_QUEUE], env=takeover)
    try:
        first.start()
        # when a fill is recorded and the worker is SIGKILLed while it is being delivered
        notifications_record(notices=[_fill(user.pk)])
        assert receiver.held.wait(60), "the delivery never reached the receiver"
        first.workers[0].kill()
        receiver.released.set()
        # and another worker starts
        second.start()
        delivery = wait_for(
            lambda: Delivery.objects.filter(status="delivered").first(), timeout=90, what="retry"
        )
    finally:
        first.stop()
        second.stop()

    # then the receiver got it twice with one idempotency key, and one delivery is recorded,
    # with the attempt that completed (the killed one is counted, it left no result)
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert keys == [str(delivery.idempotency_key)] * 2
    assert Delivery.objects.count() == 1
    assert delivery.attempts == 2
    assert [a["response_code"] for a in delivery.attempt_log] == [200]


@pytest.mark.django_db
def test_deliveries_to_private_addresses_are_refused_with_the_production_setting(
    user, receiver_for, settings, django_capture_on_commit_callbacks
):
    # given the production rule and a receiver on loopback
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    receiver = receiver_for([200])
    api = client_for(user)
    # when webhooks are added to it by address, and by a name that resolves to it
    by_address = api.post(
        "/api/webhooks", {"url": receiver.url, "events": ["trade.filled"]}, format="json"
    )
    by_name = api.post(
        "/api/webhooks",
        {"url": f"http://localhost:{receiver.port}/hook", "events": ["trade.filled"]},
        format="json",
    )
    # then the address is refused at once; the name is accepted, to be checked when sent
    assert by_address.status_code == 400
    assert field_errors(by_address) == {"url": ["refused: 127.0.0.1 is a loopback address"]}
    assert by_name.status_code == 201

    # when a notice is delivered
    with django_capture_on_commit_callbacks():
        notifications_record(notices=[_fill(user.pk)])
    delivery = Delivery.objects.get()
    outcome = delivery_attempt(delivery_id=delivery.pk)

    # then nothing reached the receiver and the delivery failed at once, saying why
    delivery.refresh_from_db()
    assert receiver.requests == [] and outcome.status == delivery.status == "failed"
    assert delivery.attempts == 1 and outcome.retry_in is None
    assert delivery.last_error.startswith("refused: localhost resolves to ")
    assert "is a loopback address" in delivery.last_error
    # and every kind of address that is not public is refused, a public one is not
    refused = {
        "10.1.2.3": "private",
        "192.168.0.10": "private",
        "169.254.169.254": "link-local",
        "::1": "loopback",
        "::ffff:127.0.0.1": "loopback",
        "fe80::1%eth0": "link-local",
        "224.0.0.1": "multicast",
        "0.0.0.0": "unspecified",
        "100.64.0.1": "not a public",
        "2002:a00:1::": "private",  # 6to4 around 10.0.0.1
    }
    for address, kind in refused.items():
        assert kind in address_refusal(address), address
    assert address_refusal("93.184.215.14") == address_refusal("2606:4700::1111") == ""


@pytest.mark.django_db
def test_webhooks_are_checked_their_secret_shown_once_and_stored_encrypted(user, other_user):
    api = client_for(user)
    good = {"url": "https://example.com/hook", "events": ["trade.filled", "order.rejected"]}
    # given bad requests, when they are sent, then each is a 400 naming its field
    bad = [
        ({**good, "url": "ftp://example.com/hook"}, "url"),
        ({**good, "url": "https://user:pw@example.com/hook"}, "url"),
        ({**good, "url": "not a url"}, "url"),
        ({**good, "events": ["trade.exploded"]}, "events.0"),
        ({**good, "events": []}, "events"),
        ({"url": good["url"]}, "events"),
        ({**good, "secret": "my own"}, "secret"),
    ]
    for body, field in bad:
        response = api.post("/api/webhooks", body, format="json")
        assert response.status_code == 400, body
        assert set(field_errors(response)) == {field}, (body, field_errors(response))
    assert not Webhook.objects.exists()

    # when a good one is created
    created = api.post("/api/webhooks", good, format="json")
    # then its secret is in that answer only, and only its ciphertext is stored
    assert created.status_code == 201
    secret, webhook_id = created.json()["secret"], created.json()["id"]
    assert secret.startswith("whsec_") and len(secret) > 40
    listed, shown = api.get("/api/webhooks"), api.get(f"/api/webhooks/{webhook_id}")
    assert listed.json()["results"] == [shown.json()]
    assert shown.json()["events"] == ["order.rejected", "trade.filled"]
    for response in (listed, shown):
        assert "secret" not in response.content.decode()
    assert secret not in Webhook.objects.get().secret_encrypted
    # and another user sees none of it, and deleting removes it
    assert client_for(other_user).get("/api/webhooks").json()["count"] == 0
    assert api.delete(f"/api/webhooks/{webhook_id}").status_code == 204
    assert api.get(f"/api/webhooks/{webhook_id}").status_code == 404


@pytest.mark.django_db
def test_a_redirect_is_not_followed_so_it_cannot_lead_a_delivery_elsewhere(
    user, receiver_for, django_capture_on_commit_callbacks
):
    # given a webhook whose receiver answers every delivery with a redirect to another
    # receiver (in production: a public host sending it on to a private address)
    elsewhere = receiver_for([200])
    redirecting = receiver_for([307], location=elsewhere.url)
    webhook_create(user=user, url=redirecting.url, events=["trade.filled"])
    with django_capture_on_commit_callbacks():
        notifications_record(notices=[_fill(user.pk)])
    delivery = Delivery.objects.get()

    # when it is attempted
    outcome = delivery_attempt(delivery_id=delivery.pk)

    # then the redirect is the answer: recorded as a failed attempt, to be retried to the
    # webhook's own URL; the other receiver never hears of it
    delivery.refresh_from_db()
    assert len(redirecting.requests) == 1 and elsewhere.requests == []
    assert outcome.status == delivery.status == "retrying"
    assert (delivery.response_code, delivery.last_error) == (307, "HTTP 307: no")


@pytest.mark.django_db
def test_retries_wait_twice_as_long_each_time_up_to_the_bound_then_the_delivery_fails(
    user, receiver_for, settings, django_capture_on_commit_callbacks
):
    # given a receiver that always fails, 5 attempts a delivery, waits from 10 s doubling
    # up to 25 s
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    settings.WEBHOOK_BACKOFF_S, settings.WEBHOOK_BACKOFF_MAX_S = 10.0, 25.0
    receiver = receiver_for([503])
    webhook_create(user=user, url=receiver.url, events=["trade.filled"])
    with django_capture_on_commit_callbacks():
        notifications_record(notices=[_fill(user.pk)])
    delivery = Delivery.objects.get()

    # when it is attempted, and attempted again before its next attempt is due
    waits, early = [], []
    for _ in range(settings.WEBHOOK_MAX_ATTEMPTS):
        outcome = delivery_attempt(delivery_id=delivery.pk)
        waits.append(outcome.retry_in)
        if outcome.retry_in is not None:
            early.append(delivery_attempt(delivery_id=delivery.pk))
            # the wait has passed
            Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())

    # then the waits double up to the bound, and the last attempt fails the delivery
    assert waits == [10.0, 20.0, 25.0, 25.0, None]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 5, None)
    assert len(receiver.requests) == 5
    assert [a["response_code"] for a in delivery.attempt_log] == [503] * 5
    # and an attempt before it was due sent nothing, and said when to look again
    assert [o.status for o in early] == ["skipped"] * 4
    assert all(o.retry_in is not None and 0 < o.retry_in <= 25.1 for o in early)


@pytest.mark.django_db
def test_other_spellings_of_a_private_address_are_refused_once_resolved(receiver_for, settings):
    # given the production rule and a receiver on loopback
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    receiver = receiver_for([200])
    # when deliveries are sent to names that the resolver turns into 127.0.0.1
    spellings = ["2130706433", "127.1", "0x7f000001", "0177.0.0.1", "LOCALHOST"]
    results = {
        host: webhook_post(url=f"http://{host}:{receiver.port}/hook", body=b"{}", headers={})
        for host in spellings
    }
    # then none reached the receiver: each is refused for good, saying what it resolved to
    assert receiver.requests == []
    for host, result in results.items():
        assert result.final and result.response_code is None, host
        # (a URL's host is read in lower case)
        expected = f"refused: {host.lower()} resolves to 127.0.0.1 is a loopback address"
        assert result.error == expected
