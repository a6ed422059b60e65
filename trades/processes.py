"""Processes the live-trading tools start: the exchange simulator, and workers on one queue."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings

from execution.processes import ManageProcess, WorkerProcess


class QueueWorker(WorkerProcess):
    """A worker node consuming only ``queue``: benchmarks, demos and tests route their tasks
    there so that another running worker (e.g. ``make run``'s) never takes them."""

    def __init__(
        self, *, queue: str, env: dict[str, str], log_dir: Path, concurrency: int = 2
    ) -> None:
        super().__init__(env=env, log_dir=log_dir, concurrency=concurrency)
        self.queue = queue

    def start(self) -> QueueWorker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config.celery_app",
                    "worker",
                    "--loglevel=INFO",
                    f"--concurrency={self.concurrency}",
                    "--pool=prefork",
                    "--without-gossip",
                    "--without-mingle",
                    "-Q",
                    self.queue,
                    "-n",
                    self.node,
                ],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
