from typing import cast

from config.redis_urls import broker_url_for, with_redis_db
from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, REDIS_URL, REST_FRAMEWORK, VAR_DIR, env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests keep off the logical databases a developer's running stack uses. Each pytest-xdist
# worker (gw0, gw1, ...) is a test run of its own, and so are the processes its tests start
# (they inherit PYTEST_XDIST_WORKER): two Redis databases further down per worker; its test
# database gets pytest-django's suffix.
_XDIST_SHIFT = 2 * int(env.str("PYTEST_XDIST_WORKER", default="gw0").removeprefix("gw") or 0)
REDIS_APP_URL = with_redis_db(REDIS_URL, env.int("TEST_REDIS_APP_DB", default=14) - _XDIST_SHIFT)
CELERY_BROKER_URL = broker_url_for(
    with_redis_db(REDIS_URL, env.int("TEST_REDIS_BROKER_DB", default=15) - _XDIST_SHIFT)
)
# A killed worker's unacknowledged tasks come back after the visibility timeout; sweep for
# them every second (kombu's default sweep is every 100 s) so crash tests finish quickly.
# TEST_VISIBILITY_TIMEOUT_S: shorter for a worker a test starts to take over a killed one's task.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("TEST_VISIBILITY_TIMEOUT_S", default=30),
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
# Metrics of this test run's processes (and its workers'), apart from other runs'.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="") or str(
    VAR_DIR / f"metrics-{env.str('TEST_SQLITE_NAME', default='test_db')}"
    f"-{env.str('PYTEST_XDIST_WORKER', default='gw0')}"
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Worker processes started by the tests must open the same test database: a file, not memory.
    # TEST_SQLITE_NAME lets concurrent test runs in one checkout keep to their own files.
    _name = env.str("TEST_SQLITE_NAME", default="test_db")
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"{_name}.sqlite3")}
STRATEGY_TIMEOUT_S = 10.0
# Tests never reach a real exchange: only overridden (simulated) exchanges are fetched from.
CANDLE_REST_FETCH = env.bool("CANDLE_REST_FETCH", default=False)
CANDLE_SETTLE_S = env.float("CANDLE_SETTLE_S", default=3.0)
CANDLE_SETTLE_POLL_S = 0.1
# Tests request more backtests an hour than anyone would; the throttle test sets its own rate.
_rates = cast(dict[str, str], REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    **_rates,
    "backtests": env("API_BACKTEST_THROTTLE_RATE", default="10000/hour"),
}
# Notifications: on the default queue (the tests' workers take it), to receivers on loopback,
# with retries in tenths of a second instead of minutes; emails kept in memory.
NOTIFICATIONS_QUEUE = env.str("NOTIFICATIONS_QUEUE", default="") or None
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=5.0)
WEBHOOK_MAX_ATTEMPTS = 3
WEBHOOK_BACKOFF_S = 0.05
WEBHOOK_BACKOFF_MAX_S = 0.2
WEBHOOK_DISABLE_AFTER = 2
WEBHOOK_SEND_LEASE_S = env.float("WEBHOOK_SEND_LEASE_S", default=10.0)
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
