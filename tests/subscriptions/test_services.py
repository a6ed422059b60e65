from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from markets.registry import market_key, registry_strategy_ids
from subscriptions.crypto import decrypt_secret
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import (
    credential_create,
    credential_delete,
    subscription_cancel,
    subscription_create,
    subscription_pause,
    subscription_resume,
)
from tests.factories import StrategyFactory, UserFactory, subscribe

KEY = market_key(exchange="binance", symbol="ETH/BTC", resolution="5m")


def _registered(strategy) -> bool:
    return strategy.pk in registry_strategy_ids(key=KEY)


@pytest.mark.django_db(transaction=True)
def test_first_subscriber_registers_and_last_one_leaving_unregisters():
    # given a strategy nobody follows
    strategy = StrategyFactory()
    assert not _registered(strategy)

    # when a first and a second user subscribe
    first = subscribe(strategy)
    second = subscribe(strategy)

    # then it is registered with an exact count
    strategy.refresh_from_db()
    assert _registered(strategy) and strategy.subscriber_count == 2

    # when one cancels and the other pauses, it leaves the registry; resuming brings it back
    subscription_cancel(subscription=first)
    assert _registered(strategy)
    subscription_pause(subscription=second)
    strategy.refresh_from_db()
    assert not _registered(strategy) and strategy.subscriber_count == 0
    subscription_resume(subscription=second)
    assert _registered(strategy)


@pytest.mark.django_db(transaction=True)
def test_a_subscription_committed_while_a_worker_rebuilds_the_registry_is_kept(monkeypatch):
    # given a registered strategy, and a worker starting: it reads the database, and before
    # it replaces the registry a user subscribes to another strategy (registered at commit)
    import strategies.services as services

    registered = StrategyFactory()
    subscribe(registered)
    newcomer = StrategyFactory()
    real_replace = services.registry_replace

    def subscribe_then_replace(*, entries):
        subscribe(newcomer)
        assert _registered(newcomer)
        real_replace(entries=entries)

    monkeypatch.setattr(services, "registry_replace", subscribe_then_replace)

    # when the rebuild finishes
    services.registry_rebuild()

    # then both strategies are in the registry
    assert _registered(registered) and _registered(newcomer)


@pytest.mark.django_db(transaction=True)
def test_beat_schedule_follows_active_resolutions():
    from django_celery_beat.models import PeriodicTask

    # given no subscribers, no enabled candle-close task
    strategy = StrategyFactory(resolution="15m")
    assert not PeriodicTask.objects.filter(name="candle-close 15m", enabled=True).exists()
    # when someone subscribes, a UTC crontab fires every 15 minutes
    sub = subscribe(strategy)
    task = PeriodicTask.objects.get(name="candle-close 15m")
    assert task.enabled and task.crontab.minute == "*/15" and str(task.crontab.timezone) == "UTC"
    # when the last one leaves it is disabled
    subscription_cancel(subscription=sub)
    assert not PeriodicTask.objects.get(name="candle-close 15m").enabled


@pytest.mark.django_db
def test_subscribing_twice_is_refused():
    strategy = StrategyFactory()
    user = UserFactory()
    subscribe(strategy, user=user)
    with pytest.raises(ValidationError, match="already subscribed"):
        subscribe(strategy, user=user)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("capital", "risk", "leverage", "field"),
    [
        ("0", "0.01", "1", "capital"),
        ("1", "0", "1", "risk_per_trade"),
        ("1", "0.11", "1", "risk_per_trade"),
        ("1", "0.01", "0.5", "leverage"),
        ("1", "0.01", "21", "leverage"),
    ],
)
def test_bad_sizing_is_refused_with_field_errors(capital, risk, leverage, field):
    with pytest.raises(ValidationError) as error:
        subscribe(StrategyFactory(), capital=capital, risk=risk, leverage=leverage)
    assert field in error.value.message_dict


@pytest.mark.django_db
def test_live_needs_own_credential_for_the_strategy_exchange():
    strategy = StrategyFactory(exchange="binance")
    owner, stranger = UserFactory(), UserFactory()
    theirs = credential_create(
        user=stranger, exchange="binance", label="x", api_key="k" * 8, secret="s" * 8
    )
    wrong_exchange = credential_create(
        user=owner, exchange="kraken", label="y", api_key="k" * 8, secret="s" * 8
    )
    for credential in (None, theirs, wrong_exchange):
        with pytest.raises(ValidationError) as error:
            subscription_create(
                user=owner,
                strategy=strategy,
                capital=Decimal(1),
                risk_per_trade=Decimal("0.01"),
                mode="live",
                credential=credential,
            )
        assert "credential_id" in error.value.message_dict


@pytest.mark.django_db
def test_credentials_are_encrypted_at_rest():
    credential = credential_create(
        user=UserFactory(),
        exchange="binance",
        label="main",
        api_key="AKIAREALKEY1234",
        secret="super-secret-value",
    )
    row = BrokerCredential.objects.values().get(pk=credential.pk)
    stored = " ".join(str(v) for v in row.values())
    assert "super-secret-value" not in stored and "AKIAREALKEY1234" not in stored
    assert decrypt_secret(row["secret_encrypted"]) == "super-secret-value"
    assert credential.masked_api_key == "****1234"


@pytest.mark.django_db(transaction=True)
def test_subscriber_count_stays_exact_under_concurrent_subscribe_and_cancel():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs a server database")
    # given a strategy and 8 users subscribing at the same time, half cancelling right away
    strategy = StrategyFactory()
    users = [UserFactory() for _ in range(8)]
    errors: list[Exception] = []

    def work(index: int) -> None:
        try:
            sub = subscribe(strategy, user=users[index])
            if index % 2:
                subscription_cancel(subscription=sub)
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then the count is exactly the number of active subscriptions
    strategy.refresh_from_db()
    assert errors == []
    assert strategy.subscriber_count == 4
    assert _registered(strategy)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("history", ["unused", "with a cancelled subscription"])
def test_subscribing_with_a_credential_deleted_since_it_was_read_is_refused(history):
    # given a credential read by a subscribe request (as the view does) ...
    user = UserFactory()
    credential = credential_create(
        user=user, exchange="binance", label="main", api_key="k" * 8, secret="s" * 8
    )
    if history != "unused":
        old = _live(user, StrategyFactory(), credential)
        subscription_cancel(subscription=old)
    strategy = StrategyFactory()
    read_by_the_request = BrokerCredential.objects.get(pk=credential.pk)

    # ... and deleted before the subscription is written
    credential_delete(credential=credential)

    # when the subscription is written with what the request read
    with pytest.raises(ValidationError) as error:
        _live(user, strategy, read_by_the_request)

    # then it is refused on the credential, and no live subscription uses an erased credential
    assert "credential_id" in error.value.message_dict
    assert not StrategySubscription.objects.filter(strategy=strategy).exists()


def _live(user, strategy, credential) -> StrategySubscription:
    return subscription_create(
        user=user,
        strategy=strategy,
        capital=Decimal(1),
        risk_per_trade=Decimal("0.01"),
        mode="live",
        credential=credential,
    )
