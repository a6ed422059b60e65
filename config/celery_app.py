import os
import threading

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


class LoggedTask(Task):
    """Every log line of a task carries its id and name (core.logs), whatever code logs it."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        from core.logs import log_context

        with log_context(task_id=self.request.id, task=self.name):
            return super().__call__(*args, **kwargs)


app = Celery("signalfan", task_cls=LoggedTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _rebuild_registry(**_: object) -> None:
    # The registry lives in Redis, which may have restarted empty: the database is the truth.
    from strategies.services import registry_rebuild

    registry_rebuild()


# Celery's own process-lifecycle signal: a prefork pool child says nothing else when it exits
# (max tasks per child, a scale-down, shutdown), and its live gauges must go with it.
@worker_process_shutdown.connect
def _metrics_process_dead(pid: int | None = None, **_: object) -> None:
    from core.metrics import metrics_process_dead

    metrics_process_dead(pid=pid or os.getpid())


# Each pool process warms its exchange clients and connections in the background, so the first
# signal after a start or deploy finds them ready; tasks run meanwhile (a client not yet built
# is built then, a connection not yet open is opened then).
@worker_process_init.connect
def _warm_exchange_pool(**_: object) -> None:
    from django.conf import settings

    if settings.EXCHANGE_POOL_WARM:
        threading.Thread(target=_warm, name="exchange-pool-warm", daemon=True).start()


def _warm() -> None:
    import logging
    import time

    from django.db import connections

    from trades.brokers.live import live_pool_warm

    logger = logging.getLogger(__name__)
    started = time.monotonic()
    try:
        warmup = live_pool_warm()
        logger.info(
            "exchange pool warmed in %.2f s: %d clients, %d connections",
            time.monotonic() - started,
            warmup.clients,
            warmup.connections,
        )
    except Exception:  # an optimisation: the fan-out builds what is missing
        logger.warning("could not warm the exchange pool", exc_info=True)
    finally:
        connections.close_all()  # this thread's own connections


# Likewise the sandbox: its zygote and a prepared spare, which the first execution of a process
# would otherwise start itself (most of a second before its strategy runs).
@worker_process_init.connect
def _warm_strategy_sandbox(**_: object) -> None:
    from django.conf import settings

    if settings.STRATEGY_SANDBOX_WARM:
        threading.Thread(target=_warm_sandbox, name="sandbox-warm", daemon=True).start()


def _warm_sandbox() -> None:
    import logging
    import time

    from django.conf import settings

    from strategies.sandbox import sandbox_warm

    logger = logging.getLogger(__name__)
    started = time.monotonic()
    try:
        mode = sandbox_warm(
            require_isolation=settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
            isolation_mode=settings.STRATEGY_SANDBOX_ISOLATION,
        )
        logger.info(
            "strategy sandbox warmed in %.2f s: %s", time.monotonic() - started, mode or "nothing"
        )
    except Exception:  # an optimisation: the first execution starts what is missing
        logger.warning("could not warm the strategy sandbox", exc_info=True)
