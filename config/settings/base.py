"""Settings shared by every environment; everything variable comes from the environment."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.embedded import ensure_embedded_redis
from config.redis_urls import app_url_for, broker_url_for

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / ".var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Development defaults, published with the code: production refuses to start with them.
DEV_SECRET_KEY = "insecure-dev-only-key-change-me"
DEV_CREDENTIALS_ENCRYPTION_KEY = "3q2-7u-q1B2lBRsFc3y6vYt9P7yOg6Tz1H5jPRx8dQ0="
SECRET_KEY = env("DJANGO_SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally, no CDN
    "django_celery_beat",
    "markets",
    "notifications",
    "strategies",
    "subscriptions",
    "execution",
    "trades",
    "backtests",
    "tooling",  # demos, benchmarks, the exchange simulator: commands only, no app imports it
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the request: refuses input the database cannot store (NUL, ...).
    "config.request_input.StorableInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# Debug pages and error mails hide every URL/DSN setting and credentials in any URL.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.error_reports.SecretsHidingReporterFilter"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Worker processes and the web process write concurrently: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front (no deadlocking lock upgrades) and the
    # timeout makes a writer wait for the lock instead of failing with 'database is locked'.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 60,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Redis and Celery -----------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="") or ensure_embedded_redis(VAR_DIR)
# The broker uses REDIS_URL's database and app data (registry, locks, events, throttles) the
# next one, so that clearing one never drops the other's queues, and two deployments on one
# Redis (each its own REDIS_URL database, two apart) share neither.
try:
    REDIS_APP_URL = env("REDIS_APP_URL", default="") or app_url_for(REDIS_URL)
except ValueError as exc:
    raise ImproperlyConfigured(f"REDIS_URL: {exc}") from exc
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or broker_url_for(REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# A task is acknowledged only after it ran, and re-queued if its worker dies: every task is
# idempotent, and the database constraints make a redelivery harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_S", default=600),
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Platform -------------------------------------------------------------------------------
MARKET_DATA_DIR = Path(env("MARKET_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "data")))
STRATEGY_TIMEOUT_S = env.float("STRATEGY_TIMEOUT_S", default=30.0)
STRATEGY_MAX_TIMEOUT_S = env.float("STRATEGY_MAX_TIMEOUT_S", default=60.0)
STRATEGY_MEMORY_MB = env.int("STRATEGY_MEMORY_MB", default=512)
STRATEGY_DEFAULT_LOOKBACK = 100
STRATEGY_SANDBOX_REQUIRE_ISOLATION = env.bool("STRATEGY_SANDBOX_REQUIRE_ISOLATION", default=False)
# auto (bubblewrap when usable, else rlimit + Landlock + seccomp), bwrap, rlimit, or cold.
STRATEGY_SANDBOX_ISOLATION = env.str("STRATEGY_SANDBOX_ISOLATION", default="auto")
# A worker's pool processes start their sandbox zygote and its prepared spare when they start,
# in the background, so the first close after a start or deploy does not wait for them (most
# of a second). On for the fan-out worker, which runs the executions (Procfile, compose).
STRATEGY_SANDBOX_WARM = env.bool("STRATEGY_SANDBOX_WARM", default=False)
# Deploys and code changes dry-run the code on a worker, never in the web process: for at most
# STRATEGY_DRY_RUN_TIMEOUT_S (and never more than half the execution timeout); the request
# waits STRATEGY_DRY_RUN_WAIT_S at most for the verdict, then answers 503. A dedicated
# STRATEGY_DRY_RUN_QUEUE (workers started with -Q) keeps dry runs and executions apart.
STRATEGY_DRY_RUN_TIMEOUT_S = env.float("STRATEGY_DRY_RUN_TIMEOUT_S", default=3.0)
STRATEGY_DRY_RUN_WAIT_S = env.float("STRATEGY_DRY_RUN_WAIT_S", default=10.0)
STRATEGY_DRY_RUN_QUEUE = env.str("STRATEGY_DRY_RUN_QUEUE", default="") or None
# Beat and stream triggers older than this are stale: the execution is skipped, not run late.
EXECUTION_MAX_DRIFT_S = env.float("EXECUTION_MAX_DRIFT_S", default=120.0)
# A close's strategies are queued in batches of one market (``execute_strategies``): a batch
# pays the task and the market's candle reads once. About EXECUTION_TARGET_TASKS batches per
# market and close (more than the pool processes, so they all stay busy and a slow strategy
# holds up few others), at most EXECUTION_CHUNK_MAX strategies each; 1 queues one per strategy.
EXECUTION_TARGET_TASKS = env.int("EXECUTION_TARGET_TASKS", default=8)
EXECUTION_CHUNK_MAX = env.int("EXECUTION_CHUNK_MAX", default=25)
# A strategy of a batch that runs longer than this hands the batch's rest to a task of its own
# (another pool process takes it): a slow tenant holds up the others for this long at most.
EXECUTION_HANDOFF_S = env.float("EXECUTION_HANDOFF_S", default=1.0)
# Each beat run covers the closes since the previous run (a late message loses none), up to this.
BEAT_CATCHUP_MAX_CLOSES = env.int("BEAT_CATCHUP_MAX_CLOSES", default=12)

# --- candle stream (issue 7) ---------------------------------------------------------------
# Replay clock shared with the exchange simulator ("<start ISO>@<speed>@<t0>"; empty = real time).
MARKET_CLOCK = env.str("MARKET_CLOCK", default="")
# A beat-triggered close waits this long when a streamer is alive, so the streamer goes first.
STREAM_BEAT_GRACE_S = env.float("STREAM_BEAT_GRACE_S", default=5.0)
# How long an execution waits for its closed candle to reach the store (fetched over REST).
CANDLE_SETTLE_S = env.float("CANDLE_SETTLE_S", default=10.0)
CANDLE_SETTLE_POLL_S = env.float("CANDLE_SETTLE_POLL_S", default=0.5)
# Fetch missing candles over REST (always for exchanges in EXCHANGE_URL_OVERRIDES).
CANDLE_REST_FETCH = env.bool("CANDLE_REST_FETCH", default=True)
# Streamer: how often it re-reads the registry, and its liveness key's time to live.
STREAM_REGISTRY_POLL_S = env.float("STREAM_REGISTRY_POLL_S", default=1.0)
STREAM_HEARTBEAT_TTL_S = env.int("STREAM_HEARTBEAT_TTL_S", default=10)
STREAM_RECONNECT_MAX_S = env.float("STREAM_RECONNECT_MAX_S", default=30.0)
# Exchanges polled over REST just after each boundary (STREAM_POLL_DELAY_S) instead of streamed;
# exchanges without WebSocket OHLCV are always polled.
STREAM_POLL_EXCHANGES: list[str] = env.list("STREAM_POLL_EXCHANGES", default=[])
STREAM_POLL_DELAY_S = env.float("STREAM_POLL_DELAY_S", default=0.2)
FANOUT_CHUNK_SIZE = env.int("FANOUT_CHUNK_SIZE", default=1)
MAX_LEVERAGE = env.int("MAX_LEVERAGE", default=20)
PAPER_FEE_BPS = Decimal(env.str("PAPER_FEE_BPS", default="10"))
PAPER_SLIPPAGE_BPS = Decimal(env.str("PAPER_SLIPPAGE_BPS", default="5"))
# Fernet keys, newest first; rotate by prepending a new key (MultiFernet).
CREDENTIALS_ENCRYPTION_KEYS = env.list(
    "CREDENTIALS_ENCRYPTION_KEYS",
    default=[DEV_CREDENTIALS_ENCRYPTION_KEY],
)

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token only: the API is for programs; the admin keeps its own session login.
    "DEFAULT_AUTHENTICATION_CLASSES": ["config.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    # Per user, on deploys and settings changes (strategies.throttles.StrategyChangeThrottle),
    # and on requested backtests (backtests.throttles.BacktestThrottle).
    "DEFAULT_THROTTLE_RATES": {
        "strategy_changes": env("API_STRATEGY_CHANGE_THROTTLE_RATE", default="10/minute"),
        "backtests": env("API_BACKTEST_THROTTLE_RATE", default="30/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Strategy execution platform API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- metrics and logs (issue 15) -------------------------------------------------------------
# Every process writes its Prometheus samples here (prometheus_client's multiprocess mode);
# /metrics adds them up. Empty it when the whole stack (re)starts: `make run` and compose do.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="") or str(
    VAR_DIR / "metrics"
)
# The bearer token /metrics asks for; unset, /metrics answers 404 (the endpoint is off).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Log lines: `plain` text (development) or `json`, one object per line (production's default);
# either way with the ids of the candle path bound at the time (core.logs).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logs.ContextFilter"}},
    "formatters": {
        "plain": {
            "()": "core.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {
            "()": "core.logs.JsonLineFormatter",
            "format": "%(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # Their DEBUG records show each request's headers and URL, where API keys travel: never
    # below INFO, whatever LOG_LEVEL says.
    "loggers": {name: {"level": "INFO"} for name in ("ccxt", "urllib3")},
}

# --- API (issue 4) --------------------------------------------------------------------------
# Sign-up and token requests per client IP (core.api.AuthRateThrottle).
API_AUTH_THROTTLE_RATE = env("API_AUTH_THROTTLE_RATE", default="20/minute")
# Reverse proxies in front of the web processes. Throttles identify a client by the address
# the connection came from (REMOTE_ADDR); only with N trusted proxies is it the N-th address
# from the end of X-Forwarded-For, the one the nearest proxy saw. Unset (DRF's default) would
# trust the whole header, so a client could choose its own address and escape every limit.
NUM_PROXIES = env.int("NUM_PROXIES", default=0)
if NUM_PROXIES < 0:
    raise ImproperlyConfigured(f"NUM_PROXIES must be 0 or more, not {NUM_PROXIES}")
REST_FRAMEWORK["NUM_PROXIES"] = NUM_PROXIES
SPECTACULAR_SETTINGS.update(
    {
        "DESCRIPTION": (
            "Client API. Authenticate with `Authorization: Bearer <token>` (the `Token <token>` "
            "keyword is accepted too); get a token from `POST /api/auth/token`. Every error "
            "answer has the shape `{detail, code, errors}`, `errors` mapping input fields to "
            "messages. Decimals are accepted as JSON strings or numbers and returned as strings."
        ),
        "COMPONENT_SPLIT_REQUEST": True,
        "SCHEMA_PATH_PREFIX": r"/api/",
        "ENUM_NAME_OVERRIDES": {
            "StrategyStatusEnum": "strategies.models.Strategy.Status",
            "SubscriptionStatusEnum": "subscriptions.models.StrategySubscription.Status",
            "SubscriptionModeEnum": "subscriptions.models.StrategySubscription.Mode",
            "ExecutionStatusEnum": "strategies.models.StrategyExecution.Status",
            "TradeStatusEnum": "trades.models.Trade.Status",
            "TradeSideEnum": "trades.models.Trade.Side",
            "BacktestStatusEnum": "backtests.models.Backtest.Status",
            "NotificationEventEnum": "notifications.models.NotificationEvent",
            "DeliveryStatusEnum": "notifications.models.Delivery.Status",
            "ResyncModeEnum": "trades.models.Divergence.ResyncMode",
            "DivergenceStatusEnum": "trades.models.Divergence.Status",
            # The exchanges a strategy (and so a backtest of code) may name: ccxt's and paper.
            "StrategyExchangeEnum": "strategies.serializers.EXCHANGES",
        },
    }
)

# --- live trading (issue 6) ---------------------------------------------------------------
# Point an exchange id at another base URL, e.g. the local simulator:
#   EXCHANGE_URL_OVERRIDES=binance=http://127.0.0.1:8765
# (run it with `python manage.py exchange_simulator --port 8765`). Every REST URL of that ccxt
# exchange keeps its path and gets the override's scheme, host and port.
EXCHANGE_URL_OVERRIDES: dict[str, str] = env.dict("EXCHANGE_URL_OVERRIDES", default={})
# New credentials are tried on their exchange (one signed balance fetch) before they are
# stored. Turn it off only where no exchange is reachable by design (an isolated stack whose
# keys are fakes): keys are then stored unchecked, and the first live order finds them out.
CREDENTIAL_CHECK = env.bool("CREDENTIAL_CHECK", default=True)
EXCHANGE_TIMEOUT_MS = env.int("EXCHANGE_TIMEOUT_MS", default=10_000)
# Unknown outcomes (network errors, timeouts, 5xx, 429/418) are looked up by client order id
# and retried this many times, with exponential backoff from EXCHANGE_RETRY_BACKOFF_S.
EXCHANGE_ORDER_RETRIES = env.int("EXCHANGE_ORDER_RETRIES", default=4)
EXCHANGE_RETRY_BACKOFF_S = env.float("EXCHANGE_RETRY_BACKOFF_S", default=0.25)
# Per-credential ccxt instances kept alive per worker process (least recently used evicted).
EXCHANGE_POOL_MAX_INSTANCES = env.int("EXCHANGE_POOL_MAX_INSTANCES", default=5000)
# A fan-out worker's processes build the clients of the active live subscriptions' credentials
# when they start, in the background, and open the HTTP connections a batch uses (per exchange
# up to EXCHANGE_CONCURRENCY, one unsigned public request each, rate-limited like any request),
# so the first signal after a deploy pays for neither. On for the fan-out worker only
# (Procfile, compose): other workers never need them.
EXCHANGE_POOL_WARM = env.bool("EXCHANGE_POOL_WARM", default=False)
# Orders in flight at once per worker process, across all credentials.
EXCHANGE_CONCURRENCY = env.int("EXCHANGE_CONCURRENCY", default=200)
EXCHANGE_MARKETS_TTL_S = env.int("EXCHANGE_MARKETS_TTL_S", default=3600)
# Seconds an idle HTTP connection to an exchange is kept for the next request (aiohttp's
# keepalive_timeout; 15 is aiohttp's default). A connection closed meanwhile is opened again by
# the next order (a TCP and TLS handshake: tens to hundreds of milliseconds to a remote
# exchange). Raising it above the gap between closes (e.g. 75 for 1m candles) keeps a worker's
# connections, the warm-up's among them, from one close to the next; keep it below the idle
# timeout of the exchange and of any NAT or proxy on the way, which drop idle connections on
# their side (an order sent on such a connection fails as a network error: looked up, resent).
EXCHANGE_KEEPALIVE_S = env.float("EXCHANGE_KEEPALIVE_S", default=15.0)
# Requests per second, shared by every worker process through Redis (ccxt's own limiter is
# per instance, so it is switched off).
EXCHANGE_RATE_PER_CREDENTIAL = env.float("EXCHANGE_RATE_PER_CREDENTIAL", default=10.0)
EXCHANGE_RATE_PER_EXCHANGE = env.float("EXCHANGE_RATE_PER_EXCHANGE", default=5000.0)
# Entries only: a signal older than this (since its execution finished) or a market price
# more than this fraction away from the signal's price is skipped. Exits always execute.
SIGNAL_MAX_AGE_S = env.float("SIGNAL_MAX_AGE_S", default=120.0)
ENTRY_PRICE_BAND = Decimal(env.str("ENTRY_PRICE_BAND", default="0.02"))
# Unfilled entry orders (limit entries, or orders an exchange left open) are cancelled after
# this long by trades.tasks.orders_cancel_stale.
ENTRY_ORDER_TIMEOUT_S = env.float("ENTRY_ORDER_TIMEOUT_S", default=300.0)
# A worker claims an order before sending it; a claim older than this belongs to a worker
# presumed dead, and the order is looked up by client order id (then resent if absent).
# Keep it above EXCHANGE_TIMEOUT_MS x (EXCHANGE_ORDER_RETRIES + 1) plus the backoffs.
ORDER_SEND_LEASE_S = env.float("ORDER_SEND_LEASE_S", default=120.0)
# Fan-out batching: a fan-out is split into about FANOUT_TARGET_TASKS tasks of between
# FANOUT_CHUNK_SIZE and FANOUT_CHUNK_MAX subscribers. Per-task costs (the task itself, a fixed
# number of queries, one round of concurrent exchange calls) are paid once per batch, so the
# best value is the number of worker pool processes that take fan-out tasks (Procfile and
# compose run one worker with --concurrency=2). FANOUT_QUEUE routes fan-out tasks to a
# dedicated queue (start workers with -Q).
FANOUT_TARGET_TASKS = env.int("FANOUT_TARGET_TASKS", default=2)
FANOUT_CHUNK_MAX = env.int("FANOUT_CHUNK_MAX", default=1000)
FANOUT_QUEUE = env.str("FANOUT_QUEUE", default="") or None
# Backtests run on their own queue (a worker started with -Q backtests), so a long one never
# delays a candle close. One run is bounded in candles, in sandbox time (the whole session)
# and in the logs it keeps.
BACKTEST_QUEUE = env.str("BACKTEST_QUEUE", default="backtests")
BACKTEST_MAX_CANDLES = env.int("BACKTEST_MAX_CANDLES", default=200_000)
BACKTEST_BUDGET_S = env.float("BACKTEST_BUDGET_S", default=600.0)
BACKTEST_MAX_LOG_CHARS = 256 * 1024
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "trades-sync-open-orders": {"task": "trades.tasks.orders_sync_open", "schedule": 30.0},
    "trades-cancel-stale-entries": {"task": "trades.tasks.orders_cancel_stale", "schedule": 60.0},
    # Hourly: a missed run is made up within the hour; a subscription with a point that day
    # is skipped, so the runs after the first cost one query.
    "trades-equity-daily": {"task": "trades.tasks.equity_daily", "schedule": 3600.0},
    # Key custody and reconciliation with the exchange (issue 17).
    "trades-credentials-recheck": {
        "task": "trades.tasks.credentials_recheck_dispatch",
        "schedule": env.float("CUSTODY_RECHECK_INTERVAL_S", default=3600.0),
    },
    "trades-reconcile": {
        "task": "trades.tasks.reconcile_dispatch",
        "schedule": env.float("RECONCILE_INTERVAL_S", default=300.0),
    },
    # The listing's track-record figures (returns over 7/30/90 days move with the clock).
    "backtests-records-refresh": {"task": "backtests.tasks.records_refresh", "schedule": 300.0},
}

# --- key custody and reconciliation (issue 17) -----------------------------------------------
# Live credentials are re-checked (their permissions, or a balance fetch) and reconciled
# (balances / positions and open orders against the platform's) a batch per task; every
# request takes its tokens from the fan-out's rate limiter (EXCHANGE_RATE_PER_*).
CUSTODY_BATCH_SIZE = env.int("CUSTODY_BATCH_SIZE", default=200)
RECONCILE_BATCH_SIZE = env.int("RECONCILE_BATCH_SIZE", default=200)
# A balance or position within this fraction of the platform's is not a divergence (fees
# charged in the base asset, rounding to the market's step).
RECONCILE_TOLERANCE = Decimal(env.str("RECONCILE_TOLERANCE", default="0.002"))
# An order the platform holds open is reported missing from the exchange only once it has not
# changed for this long (the order sync may be recording its fill right now).
RECONCILE_ORDER_GRACE_S = env.float("RECONCILE_ORDER_GRACE_S", default=120.0)

# --- notifications (issue 14) ---------------------------------------------------------------
# Webhook deliveries and emails go out on a queue of their own (a worker started with
# -Q notifications), so a slow receiver never delays a candle close or a fan-out.
NOTIFICATIONS_QUEUE = env.str("NOTIFICATIONS_QUEUE", default="notifications") or None
# One attempt waits at most WEBHOOK_TIMEOUT_S for the receiver (connect and answer); a failed
# one is retried after WEBHOOK_BACKOFF_S x 2^(attempt - 1), at most WEBHOOK_BACKOFF_MAX_S
# (kept below the broker's visibility timeout, CELERY_VISIBILITY_TIMEOUT_S), up to
# WEBHOOK_MAX_ATTEMPTS attempts. After WEBHOOK_DISABLE_AFTER failed deliveries in a row the
# webhook is disabled, with the reason.
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_BACKOFF_S = env.float("WEBHOOK_BACKOFF_S", default=10.0)
WEBHOOK_BACKOFF_MAX_S = env.float("WEBHOOK_BACKOFF_MAX_S", default=300.0)
WEBHOOK_DISABLE_AFTER = env.int("WEBHOOK_DISABLE_AFTER", default=5)
# A worker claims a delivery before sending it; a claim older than this belongs to a worker
# presumed dead, and the delivery is sent again (with the same idempotency key). Keep it
# above WEBHOOK_TIMEOUT_S.
WEBHOOK_SEND_LEASE_S = env.float("WEBHOOK_SEND_LEASE_S", default=60.0)
# Deliveries to loopback, private, link-local, reserved and other non-global addresses are
# refused (the host is resolved at send time and every address checked), so a webhook cannot
# probe the operator's network. `local` and `test` allow them (receivers on this machine).
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=False)
# Email (EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.com:587); the console backend
# (printed by the worker) when unset.
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = int(_email.get("EMAIL_PORT") or 25)
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="signalfan <notifications@localhost>")
