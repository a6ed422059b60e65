"""Key custody: live credentials are re-checked on the exchange (the simulator, through real
ccxt); a key revoked or changed there pauses its subscriptions with the reason, and says so."""

from __future__ import annotations

import pytest

from notifications.models import Notification, NotificationEvent
from subscriptions.models import BrokerCredential, StrategySubscription
from tests.factories import StrategyFactory
from tests.trades.live import live_trader
from trades.custody import credential_batches, credentials_recheck

pytestmark = pytest.mark.django_db(transaction=True)


def _status(trader) -> tuple[str, str]:
    trader.subscription.refresh_from_db()
    return trader.subscription.status, trader.subscription.status_reason


def test_a_key_revoked_or_given_withdrawals_on_the_exchange_pauses_its_subscriptions(sim, market):
    # given three live subscribers with working keys
    strategy = StrategyFactory()
    fine, revoked, withdrawing = (live_trader(sim, strategy) for _ in range(3))
    # when one key is revoked and another gets withdrawals enabled, behind the platform's back
    sim.account_edit(revoked.api_key, revoked=True)
    sim.account_edit(withdrawing.api_key, restrictions={"enableWithdrawals": True})
    (batch,) = credential_batches(size=10)
    outcome = credentials_recheck(credential_ids=batch)
    # then those two subscriptions are paused with the reason, and the third goes on
    assert outcome.checked == 3 and outcome.failed == 2
    assert _status(fine) == (StrategySubscription.Status.ACTIVE, "")
    status, reason = _status(revoked)
    assert status == StrategySubscription.Status.PAUSED
    assert "key changed on the exchange" in reason and "refused the keys" in reason
    status, reason = _status(withdrawing)
    assert status == StrategySubscription.Status.PAUSED and "withdrawals are enabled" in reason
    # and each of their owners is told, with the reason
    paused = Notification.objects.filter(event=NotificationEvent.SUBSCRIPTION_PAUSED)
    assert sorted(n.user_id for n in paused) == sorted(
        t.subscription.user_id for t in (revoked, withdrawing)
    )
    # and the working key's permissions are on record
    credential = BrokerCredential.objects.get(pk=fine.subscription.credential_id)
    assert credential.permissions["enableWithdrawals"] is False
    assert credential.permissions_checked_at is not None


def test_a_key_that_lost_its_ip_restriction_is_warned_about_not_paused(sim, market):
    # given a live subscriber whose key's IP restriction was removed on the exchange
    trader = live_trader(sim, StrategyFactory())
    sim.account_edit(trader.api_key, restrictions={"ipRestrict": False})
    # when the keys are re-checked
    credentials_recheck(credential_ids=[trader.subscription.credential_id])
    # then the subscription goes on and the credential carries the warning
    assert _status(trader)[0] == StrategySubscription.Status.ACTIVE
    credential = BrokerCredential.objects.get(pk=trader.subscription.credential_id)
    assert any("not restricted to IP" in w for w in credential.key_warnings)
