"""``/metrics``: the Prometheus scrape of every process, behind a bearer token.

The business metrics (core.metrics) are read from the multiprocess directory every process
writes to; the gauges below are read from Redis at scrape time, since no process owns them:
Celery queue depths, whether a streamer is alive, and the markets registered.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

import core.metrics  # noqa: F401  (sets up the multiprocess directory)
from config.celery_app import app
from core.time_utils import resolution_to_timedelta
from execution.streaming.services import market_parse, streamer_alive
from markets.registry import registry_market_keys

logger = logging.getLogger(__name__)

# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists of their own.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = ("", *(f"{PRIORITY_SEPARATOR}{step}" for step in (3, 6, 9)))


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: set METRICS_TOKEN")
    supplied = request.headers.get("Authorization", "")
    if not supplied:
        return _refused(401)
    if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
        return _refused(403)
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)


def _refused(status: int) -> HttpResponse:
    response = HttpResponse("a bearer token is required\n", status=status)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    registry.register(PlatformCollector())
    return registry


def celery_queues() -> list[str]:
    """Every queue a task of this platform is routed to."""
    names = [
        app.conf.task_default_queue or "celery",
        settings.BACKTEST_QUEUE,
        settings.NOTIFICATIONS_QUEUE,
        settings.FANOUT_QUEUE,
        settings.STRATEGY_DRY_RUN_QUEUE,
    ]
    return sorted({name for name in names if name})


def celery_queue_lengths() -> dict[str, int]:
    queues = celery_queues()
    # Through kombu: it reads every broker URL Celery does (the embedded Redis' socket too).
    with app.connection_for_read() as connection:
        pipe = connection.default_channel.client.pipeline()
        for queue in queues:
            for suffix in PRIORITY_STEPS:
                pipe.llen(queue + suffix)
        lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}


class PlatformCollector(Collector):
    """Gauges read at scrape time; a part that cannot be read is left out, never a failed
    scrape (Prometheus' own `up` and the alert on the missing series tell)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for part in (self._queues, self._streamer, self._markets):
            try:
                yield part()
            except Exception:  # a scrape reports, it does not fail on one part
                logger.warning("metrics: %s could not be read", part.__name__, exc_info=True)

    def _queues(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "signalfan_celery_queue_length", "Tasks waiting in a Celery queue.", labels=["queue"]
        )
        for queue, length in celery_queue_lengths().items():
            family.add_metric([queue], length)
        return family

    def _streamer(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "signalfan_streamer_up",
            "1 while a candle streamer's heartbeat is fresh in Redis, else 0.",
            value=1 if streamer_alive() else 0,
        )

    def _markets(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "signalfan_market_interval_seconds",
            "Markets with registered strategies, valued at their candle's length in seconds.",
            labels=["exchange", "symbol", "resolution"],
        )
        for key in sorted(registry_market_keys()):
            exchange, symbol, resolution = market_parse(key)
            seconds = resolution_to_timedelta(resolution).total_seconds()
            family.add_metric([exchange, symbol, resolution], seconds)
        return family
