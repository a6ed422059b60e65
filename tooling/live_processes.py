"""Processes the live-trading tools start: the exchange simulator, and workers on one queue."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import requests

from tooling.processes import ManageProcess, WorkerProcess, free_port


class QueueWorker(WorkerProcess):
    """A worker node consuming only ``queue``: benchmarks, demos and tests route their tasks
    there so that another running worker (e.g. ``make run``'s) never takes them."""

    def __init__(
        self,
        *,
        queue: str,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 2,
        loglevel: str = "WARNING",
    ) -> None:
        super().__init__(
            env=env, log_dir=log_dir, concurrency=concurrency, queues=[queue], loglevel=loglevel
        )
        self.queue = queue


def simulator_start(
    *, port: int, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()
) -> ManageProcess:
    """``manage.py exchange_simulator`` on ``port``; returns once it answers HTTP."""
    if not port_is_free(port):
        # Another simulator answering there would be taken for ours.
        raise RuntimeError(f"port {port} is in use")
    process = ManageProcess(
        ["exchange_simulator", f"--port={port}", *args], env=env, log_path=log_path
    ).start()
    url = f"http://127.0.0.1:{port}/api/v3/ping"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.proc is not None and process.proc.poll() is not None:
            raise RuntimeError(f"the simulator exited; see {log_path}")
        try:
            if requests.get(url, timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.1)
    process.stop()
    raise TimeoutError(f"the simulator did not answer; see {log_path}")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


__all__ = ["QueueWorker", "free_port", "simulator_start"]
