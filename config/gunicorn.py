"""gunicorn settings (``gunicorn -c config/gunicorn.py``): a worker that exits takes its live
Prometheus gauges with it (prometheus_client's multiprocess mode)."""

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from core.metrics import metrics_process_dead

    metrics_process_dead(pid=worker.pid)
