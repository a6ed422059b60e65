"""Start and stop real processes (Celery workers, the simulator, the streamer) for the demo,
benchmarks and integration tests: each in its own process group, logged to a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Self

from django.conf import settings

from config.celery_app import app


class ManagedProcess:
    """A child process in its own session (so its whole group can be signalled) with a log."""

    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a worker's warm shutdown lets running tasks finish), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class WorkerProcess(ManagedProcess):
    """One ``celery worker`` node; ``queues`` limits it to those queues (default: all)."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 2,
        queues: list[str] | None = None,
        loglevel: str = "INFO",
    ) -> None:
        self.node = f"w{uuid.uuid4().hex[:8]}@%h"
        self.log_dir, self.concurrency = log_dir, concurrency
        self.queues, self.loglevel = queues, loglevel
        super().__init__(env=env, log_path=log_dir / f"worker-{self.node.split('@')[0]}.log")

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker"]
        argv += [f"--loglevel={self.loglevel}", f"--concurrency={self.concurrency}"]
        argv += ["--pool=prefork", "--without-gossip", "--without-mingle", "-n", self.node]
        return argv + (["-Q", ",".join(self.queues)] if self.queues else [])

    def is_ready(self) -> bool:
        prefix = self.node.split("@")[0] + "@"
        replies = app.control.ping(timeout=0.5) or []
        return any(name.startswith(prefix) for reply in replies for name in reply)

    def wait_ready(self, timeout: float = 60.0) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                raise RuntimeError(f"worker exited; see {self.log_path}")
            if self.is_ready():
                return self
        raise TimeoutError(f"worker not ready after {timeout} s; see {self.log_path}")


class ManageProcess(ManagedProcess):
    """``manage.py <command> ...`` (the simulator, the streamer)."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env=env, log_path=log_path)
        self.args = args

    def argv(self) -> list[str]:
        return [sys.executable, "manage.py", *self.args]

    def wait_for_log(self, text: str, timeout: float = 60.0) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return self
            if self.exited():
                raise RuntimeError(f"{self.args[0]} exited; see {self.log_path}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.args[0]} did not print {text!r}; see {self.log_path}")


def free_port() -> int:
    """A TCP port free on loopback right now (for a simulator a test or benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(**overrides: str) -> dict[str, str]:
    """This process's environment, pinned to the same database and Redis."""
    env = dict(os.environ)
    env["REDIS_URL"] = settings.REDIS_URL
    env.update(overrides)
    return env
