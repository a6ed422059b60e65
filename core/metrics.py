"""The platform's Prometheus metrics, defined once, recorded by the services where things happen.

Every process (gunicorn workers, Celery pool children, beat, the streamer) writes its samples
to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode), and
``/metrics`` (config.metrics) adds them up at scrape time. Labels are exchange, resolution,
status, trigger and the like, never a user, strategy or subscription id: their number must not
grow with the tenants.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import mark_process_dead


def process_identifier() -> str:
    """Names this process's sample files: host and pid, since containers sharing the directory
    (compose mounts one volume in every service) each number their processes from 1."""
    return _identifier(os.getpid())


def _identifier(pid: int) -> str:
    # prometheus_client splits file names on '_': none in the host part.
    return f"{socket.gethostname().replace('_', '-')}-{pid}"


def metrics_process_dead(*, pid: int) -> None:
    """Drop the live gauges of an exited process of this host (its counters stay counted)."""
    mark_process_dead(_identifier(pid))


# The directory comes from the settings (a default under the var dir in development and tests);
# prometheus_client reads it from the environment whenever a process opens its files, and
# processes started from this one inherit it.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.PROMETHEUS_MULTIPROC_DIR))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)

# Seconds, from a fast sandbox run to a slow fan-out.
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SUBSCRIBERS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# --- executions -----------------------------------------------------------------------------
EXECUTIONS = Counter(
    "signalfan_executions",
    "Executions finished, by final status and trigger.",
    ["exchange", "resolution", "status", "trigger"],
)
EXECUTION_DURATION = Histogram(
    "signalfan_execution_duration_seconds",
    "Claim to final status of an execution (candle wait, sandbox, recording).",
    ["exchange", "resolution", "status"],
    buckets=LATENCY,
)
SANDBOX_DURATION = Histogram(
    "signalfan_sandbox_duration_seconds",
    "Wall time of one sandbox call (start, the strategy's own time, teardown): its overhead "
    "is this minus the strategy's own time (manage.py bench_sandbox measures both).",
    ["isolation", "outcome"],
    buckets=LATENCY,
)
CLOSE_TO_START = Histogram(
    "signalfan_close_to_start_seconds",
    "Candle close to execution start (beat and stream triggers only), in real seconds.",
    ["exchange", "resolution", "trigger"],
    buckets=LATENCY,
)
CLOSE_TO_LAST_ORDER = Histogram(
    "signalfan_close_to_last_order_seconds",
    "Candle close to the last order of an execution's fan-out (beat and stream triggers).",
    ["exchange", "resolution"],
    buckets=LATENCY,
)
BEAT_FOUND_DONE = Counter(
    "signalfan_beat_found_done",
    "Beat executions that found the stream's execution of their candle already there.",
    ["exchange", "resolution"],
)
MARKET_LAST_EXECUTION = Gauge(
    "signalfan_market_last_execution_timestamp_seconds",
    "Close time (Unix, real time) of the newest candle a market's strategies executed.",
    ["exchange", "symbol", "resolution"],
    multiprocess_mode="max",
)

# --- fan-out and orders ---------------------------------------------------------------------
FANOUT_SIZE = Histogram(
    "signalfan_fanout_subscribers",
    "Subscribers an actionable signal fanned out to.",
    ["exchange", "resolution"],
    buckets=SUBSCRIBERS,
)
FANOUT_BATCH_DURATION = Histogram(
    "signalfan_fanout_batch_duration_seconds",
    "Wall time of one fan-out batch (its subscribers' orders sent and recorded).",
    ["exchange", "resolution"],
    buckets=LATENCY,
)
ORDERS = Counter(
    "signalfan_orders",
    "Order results recorded, by the status they left the order in (exchange 'paper' for "
    "paper subscribers).",
    ["exchange", "status"],
)
EXCHANGE_ERRORS = Counter(
    "signalfan_exchange_errors",
    "Errors of order requests to exchanges, by ccxt error class.",
    ["exchange", "error"],
)
RATELIMIT_WAIT = Histogram(
    "signalfan_ratelimit_wait_seconds",
    "Time an exchange request waited for its rate-limit token.",
    ["exchange"],
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RATELIMIT_TOKENS = Counter(
    "signalfan_ratelimit_tokens",
    "Rate-limit tokens asked for: granted at once, or not (the request then waits).",
    ["outcome"],
)

# --- the candle stream ----------------------------------------------------------------------
STREAM_MARKETS = Gauge(
    "signalfan_stream_markets",
    "Markets the candle streamer watches.",
    ["exchange"],
    multiprocess_mode="livesum",
)
STREAM_RECONNECTS = Counter(
    "signalfan_stream_reconnects",
    "Stream connections lost and reopened.",
    ["exchange", "resolution"],
)
STREAM_BACKFILLS = Counter(
    "signalfan_stream_backfills",
    "Backfills of missed closes over REST, by outcome (filled: closes recovered; empty; failed).",
    ["exchange", "resolution", "outcome"],
)

# --- notifications --------------------------------------------------------------------------
WEBHOOK_ATTEMPTS = Counter(
    "signalfan_webhook_attempts",
    "Webhook delivery attempts, by the delivery's status after it (delivered, retrying, failed).",
    ["outcome"],
)
