from __future__ import annotations

import logging
import queue
import threading
import time
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from notifications.models import Webhook
from subscriptions import crypto
from subscriptions.crypto import CredentialDecryptionError, decrypt_secret
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import subscription_cancel, subscription_pause
from tests.api.helpers import client_for, field_errors, make_credential, subscribe_payload
from tests.factories import StrategyFactory
from tooling.live_processes import free_port

API_KEY = "AKIA-plain-key-WXYZ"
SECRET = "s3cr3t-value-that-must-never-leak"
PASSPHRASE = "pass-phrase-also-secret"


def credential_payload(**overrides):
    payload = {
        "exchange": "binance",
        "label": "main",
        "api_key": API_KEY,
        "secret": SECRET,
        "passphrase": PASSPHRASE,
        "is_sandbox": True,
    }
    payload.update(overrides)
    return payload


@pytest.fixture
def account(exchange):
    """My account on the exchange, which the keys of ``credential_payload`` open."""
    exchange.account(API_KEY, SECRET, {"BTC": "1"})
    return exchange


def _raw_row(credential_id: int) -> str:
    """Every column of the row as the database stores it, as one string."""
    table = BrokerCredential._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [credential_id])
        return " ".join(str(value) for value in cursor.fetchone())


@pytest.mark.django_db
def test_create_encrypts_at_rest_and_answers_with_a_masked_key(api, me, account):
    # when I store exchange credentials
    response = api.post("/api/credentials", credential_payload(), format="json")
    # then the answer has the label, the exchange and the key's last 4 characters only
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "id",
        "exchange",
        "label",
        "api_key_masked",
        "is_sandbox",
        "created_at",
        "permissions",
        "key_warnings",
        "key_note",
        "permissions_checked_at",
    }
    assert body["api_key_masked"] == "****WXYZ"
    assert (body["exchange"], body["label"], body["is_sandbox"]) == ("binance", "main", True)
    text = response.content.decode()
    for plain in (API_KEY, SECRET, PASSPHRASE, API_KEY[:-4]):
        assert plain not in text
    # and the database holds ciphertext only, which decrypts back
    assert all(plain not in _raw_row(body["id"]) for plain in (API_KEY, SECRET, PASSPHRASE))
    credential = BrokerCredential.objects.get(pk=body["id"])
    assert credential.user == me
    assert decrypt_secret(credential.api_key_encrypted) == API_KEY
    assert decrypt_secret(credential.secret_encrypted) == SECRET
    assert decrypt_secret(credential.passphrase_encrypted) == PASSPHRASE
    # and the exchange's check of the keys was a read: nothing was ordered
    assert account.orders() == []


@pytest.mark.django_db
def test_passphrase_is_optional(api, account):
    payload = credential_payload()
    del payload["passphrase"], payload["is_sandbox"]
    response = api.post("/api/credentials", payload, format="json")
    assert response.status_code == 201
    credential = BrokerCredential.objects.get()
    assert credential.passphrase_encrypted == "" and credential.is_sandbox is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"exchange": "nasdaq"}, "exchange"),
        ({"exchange": "paper"}, "exchange"),  # paper trading needs no keys
        ({"api_key": "short"}, "api_key"),
        ({"api_key": None}, "api_key"),
        ({"secret": ""}, "secret"),
        ({"label": ""}, "label"),
        ({"label": "x" * 101}, "label"),
        ({"is_sandbox": "true"}, "is_sandbox"),
        ({"user": 1}, "user"),
    ],
)
def test_create_validation_errors_never_echo_the_secret(api, override, field):
    response = api.post("/api/credentials", credential_payload(**override), format="json")
    assert response.status_code == 400 and field in field_errors(response)
    assert SECRET not in response.content.decode() and API_KEY not in response.content.decode()
    assert not BrokerCredential.objects.exists()


@pytest.mark.django_db
def test_labels_are_unique_per_user(api, their_api, account):
    assert api.post("/api/credentials", credential_payload(), format="json").status_code == 201
    again = api.post("/api/credentials", credential_payload(), format="json")
    assert again.status_code == 400 and "label" in field_errors(again)
    # another user may use the same label
    assert (
        their_api.post("/api/credentials", credential_payload(), format="json").status_code == 201
    )


BINANCE_REFUSED = "the exchange refused these keys (AuthenticationError: binance"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "field", "reason"),
    [
        ("unknown key", "api_key", f'{BINANCE_REFUSED} {{"code": -2015, "msg": "Invalid API-key'),
        ("wrong secret", "api_key", f'{BINANCE_REFUSED} {{"code": -1022, "msg": "Signature'),
        ("exchange down", "exchange", "the exchange could not be reached to check the keys"),
        ("no testnet", "is_sandbox", "kraken has no sandbox (testnet) in ccxt"),
    ],
)
def test_keys_the_exchange_does_not_take_are_refused_with_its_reason(
    api, exchange, settings, case, field, reason
):
    # given keys the exchange does not know, or signed with another secret than its own, an
    # exchange that cannot be reached, or testnet keys for an exchange without a testnet
    payload = credential_payload()
    if case == "wrong secret":
        exchange.account(API_KEY, "the-secret-the-exchange-has", {"BTC": "1"})
    elif case == "exchange down":
        settings.EXCHANGE_URL_OVERRIDES = {"binance": f"http://127.0.0.1:{free_port()}"}
    elif case == "no testnet":
        payload["exchange"] = "kraken"
    # when I store them
    response = api.post("/api/credentials", payload, format="json")
    # then the answer is a 400 on the field concerned, with the exchange's reason
    assert response.status_code == 400, response.content
    errors = field_errors(response)
    assert list(errors) == [field] and errors[field][0].startswith(reason), errors
    # and nothing is stored, and no key or secret is in the answer
    assert not BrokerCredential.objects.exists()
    for plain in (API_KEY, SECRET, PASSPHRASE):
        assert plain not in response.content.decode()


@pytest.mark.django_db
def test_list_is_mine_masked_and_filterable(api, me, them):
    make_credential(me, label="a")
    make_credential(me, exchange="kraken", label="b")
    make_credential(them, label="theirs")
    response = api.get("/api/credentials?ordering=label")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [c["label"] for c in results] == ["a", "b"]
    assert all(c["api_key_masked"] == "****1234" for c in results)
    assert "very-secret-value" not in response.content.decode()
    kraken = api.get("/api/credentials?exchange=kraken").json()["results"]
    assert [c["label"] for c in kraken] == ["b"]
    assert api.get("/api/credentials?is_sandbox=true").json()["count"] == 0


@pytest.mark.django_db
def test_delete_an_unused_credential(api, me):
    credential = make_credential(me)
    response = api.delete(f"/api/credentials/{credential.pk}")
    assert response.status_code == 204 and not response.content
    assert not BrokerCredential.objects.filter(pk=credential.pk).exists()


@pytest.fixture
def live(api, me):
    """My live subscription on my binance credential (created through the API)."""
    credential = make_credential(me)
    strategy = StrategyFactory(owner=me)
    response = api.post(
        f"/api/strategies/{strategy.pk}/subscribe",
        subscribe_payload(mode="live", credential_id=credential.pk),
        format="json",
    )
    assert response.status_code == 201
    return StrategySubscription.objects.get(pk=response.json()["id"])


@pytest.mark.django_db
def test_deleting_a_credential_used_by_an_active_live_subscription_is_409(api, live):
    credential = live.credential
    before = _raw_row(credential.pk)
    response = api.delete(f"/api/credentials/{credential.pk}")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict" and f"subscription(s) {live.pk}" in body["detail"]
    assert "cancel them first" in body["detail"]
    # nothing changed
    assert _raw_row(credential.pk) == before


@pytest.mark.django_db
def test_a_paused_subscription_still_holds_its_credential(api, live):
    subscription_pause(subscription=live)
    assert api.delete(f"/api/credentials/{live.credential_id}").status_code == 409


@pytest.mark.django_db
def test_after_a_cancel_the_credential_is_deleted_and_its_secrets_destroyed(api, live, account):
    # given the live subscription was cancelled (it keeps pointing at the credential)
    subscription_cancel(subscription=live)
    credential_id = live.credential_id
    # when the credential is deleted
    response = api.delete(f"/api/credentials/{credential_id}")
    # then it is gone for its owner and no ciphertext remains
    assert response.status_code == 204
    assert api.get("/api/credentials").json()["count"] == 0
    assert api.delete(f"/api/credentials/{credential_id}").status_code == 404
    row = BrokerCredential.objects.get(pk=credential_id)
    assert (row.api_key_encrypted, row.secret_encrypted, row.passphrase_encrypted) == ("", "", "")
    # and the label is free again
    assert api.post("/api/credentials", credential_payload(), format="json").status_code == 201


@pytest.mark.django_db
def test_no_log_record_ever_shows_the_secret_or_the_full_key(api, me, caplog, account):
    # given every logger recording at DEBUG
    caplog.set_level(logging.DEBUG)
    strategy = StrategyFactory(owner=me)
    # when credentials go through every path: create, a refused duplicate, a refused bad
    # input, listing, a live subscription, a refused delete, a 404 and a delete
    created = api.post("/api/credentials", credential_payload(), format="json").json()
    api.post("/api/credentials", credential_payload(), format="json")
    api.post("/api/credentials", credential_payload(exchange="nasdaq"), format="json")
    api.post("/api/credentials", credential_payload(label="other"), format="json")
    api.get("/api/credentials")
    api.post(
        f"/api/strategies/{strategy.pk}/subscribe",
        subscribe_payload(mode="live", credential_id=created["id"]),
        format="json",
    )
    api.delete(f"/api/credentials/{created['id']}")
    api.delete("/api/credentials/987654")
    other = BrokerCredential.objects.get(label="other")
    api.delete(f"/api/credentials/{other.pk}")
    # then something was logged, and none of it holds the secret, the passphrase or the key
    assert caplog.records
    logged = caplog.text + " ".join(repr(record.args) for record in caplog.records)
    for plain in (SECRET, PASSPHRASE, API_KEY):
        assert plain not in logged


# --- key rotation ---------------------------------------------------------------------------
OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def use_keys(settings):
    """Switch CREDENTIALS_ENCRYPTION_KEYS (newest first) for the rest of the test."""

    def use(*keys: str) -> None:
        settings.CREDENTIALS_ENCRYPTION_KEYS = list(keys)
        crypto._fernet.cache_clear()

    yield use
    crypto._fernet.cache_clear()


@pytest.mark.django_db
def test_keys_rotate_without_losing_a_credential(api, use_keys, account):
    # given a credential and a webhook's secret stored under the old key
    use_keys(OLD_KEY)
    created = api.post("/api/credentials", credential_payload(), format="json").json()
    before = BrokerCredential.objects.get(pk=created["id"])
    hook = {"url": "https://example.com/hook", "events": ["trade.filled"]}
    webhook = api.post("/api/webhooks", hook, format="json").json()
    # when a new key is prepended, the old ciphertexts still decrypt
    use_keys(NEW_KEY, OLD_KEY)
    assert decrypt_secret(before.secret_encrypted) == SECRET
    # and the rotation re-encrypts every credential with the new key
    out = StringIO()
    call_command("rotate_credential_keys", stdout=out)
    assert out.getvalue().strip() == (
        "re-encrypted 1 credentials and 1 webhook secrets with the newest key"
    )
    after = BrokerCredential.objects.get(pk=created["id"])
    assert after.secret_encrypted != before.secret_encrypted
    # after which the old key can be dropped
    use_keys(NEW_KEY)
    assert decrypt_secret(after.api_key_encrypted) == API_KEY
    assert decrypt_secret(after.secret_encrypted) == SECRET
    assert decrypt_secret(after.passphrase_encrypted) == PASSPHRASE
    assert decrypt_secret(Webhook.objects.get().secret_encrypted) == webhook["secret"]
    with pytest.raises(CredentialDecryptionError):
        decrypt_secret(before.secret_encrypted)


@pytest.mark.django_db
def test_rotating_after_dropping_the_old_key_is_a_clear_command_error(me, use_keys):
    use_keys(OLD_KEY)
    make_credential(me)
    use_keys(NEW_KEY)
    with pytest.raises(CommandError, match="keep the old key in the list until rotated"):
        call_command("rotate_credential_keys", stdout=StringIO())


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _wait_until_blocked(pid: int, *, by: int, thread: threading.Thread) -> None:
    """Until the backend ``pid`` waits for a lock that the backend ``by`` holds."""
    deadline = time.monotonic() + 60  # a guard against hanging, not a timing assumption
    while thread.is_alive() and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_blocking_pids(%s)", [pid])
            if by in cursor.fetchone()[0]:
                return
        time.sleep(0.01)
    raise AssertionError("the subscribe never waited for the delete's lock on the credential")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("history", ["unused", "with a cancelled subscription"])
def test_delete_racing_a_live_subscribe_leaves_no_live_subscription_on_it(me, history):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time (BEGIN IMMEDIATE): no interleaving")
    # given my credential, possibly kept for a cancelled subscription's history
    credential = make_credential(me)
    if history != "unused":
        old = StrategySubscription.objects.get(pk=_subscribe_live(me, credential).json()["id"])
        subscription_cancel(subscription=old)
    strategy = StrategyFactory(owner=me)
    api = client_for(me)  # the token exists before the race: only the credential is contended
    pids: queue.Queue[int] = queue.Queue()
    outcome: dict[str, object] = {}

    def subscribe_meanwhile() -> None:
        try:
            pids.put(_backend_pid())
            outcome["response"] = _subscribe_live(me, credential, strategy=strategy)
        except Exception as exc:  # surfaced by the assertions below
            outcome["error"] = exc
        finally:
            connection.close()

    # when a subscribe on it runs while its delete holds the credential, uncommitted
    thread = threading.Thread(target=subscribe_meanwhile)
    with transaction.atomic():
        deleted = api.delete(f"/api/credentials/{credential.pk}")
        thread.start()
        _wait_until_blocked(pids.get(timeout=60), by=_backend_pid(), thread=thread)
    thread.join()

    # then the delete went through and the subscribe, which waited for it, is a clean 400
    assert deleted.status_code == 204
    assert "error" not in outcome, outcome.get("error")
    response = outcome["response"]
    assert response.status_code == 400, response.content
    assert "credential_id" in field_errors(response)
    # and no subscription but cancelled ones points at the credential
    assert (
        not StrategySubscription.objects.filter(credential_id=credential.pk)
        .exclude(status=StrategySubscription.Status.CANCELLED)
        .exists()
    )


def _subscribe_live(user, credential, *, strategy=None):
    strategy = strategy or StrategyFactory(owner=user)
    return client_for(user).post(
        f"/api/strategies/{strategy.pk}/subscribe",
        subscribe_payload(mode="live", credential_id=credential.pk),
        format="json",
    )


@pytest.mark.django_db
def test_a_key_that_can_withdraw_is_refused_with_a_400_naming_the_key(api, account):
    # given a key whose owner left withdrawals enabled on the exchange
    account.account_edit(API_KEY, restrictions={"enableWithdrawals": True})
    # when I store it
    response = api.post("/api/credentials", credential_payload(is_sandbox=False), format="json")
    # then it is refused, with the reason on the key, and nothing is stored
    assert response.status_code == 400, response.content
    assert "withdrawals are enabled on this key" in field_errors(response)["api_key"][0]
    assert not BrokerCredential.objects.exists()


@pytest.mark.django_db
def test_a_key_without_ip_restriction_is_taken_with_a_warning_and_its_permissions(api, account):
    # given a key bound to no IP address
    account.account_edit(API_KEY, restrictions={"ipRestrict": False})
    # when I store it
    response = api.post("/api/credentials", credential_payload(is_sandbox=False), format="json")
    # then it is stored, and the answer says what the exchange reported and what to fix
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["permissions"]["enableWithdrawals"] is False
    assert body["permissions"]["ipRestrict"] is False
    assert body["permissions_checked_at"] is not None
    assert len(body["key_warnings"]) == 1 and "not restricted to IP" in body["key_warnings"][0]


def test_an_exchange_without_a_permissions_endpoint_says_the_key_was_not_checked():
    # given an exchange that exposes no key permissions through ccxt (asked of nothing)
    import ccxt

    from subscriptions.keycheck import _permissions_check

    # when the permissions of its keys are checked
    check = _permissions_check(ccxt.kraken(), "kraken", [])
    # then nothing is refused, and the answer says the key was not checked
    assert not check.checked and check.permissions == {}
    assert "kraken does not expose" in check.note and "not checked" in check.note
