"""Start and stop real Celery worker processes (the demo, benchmarks and integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings

from config.celery_app import app


class WorkerProcess:
    """One ``celery worker`` node in its own process group, with its log in ``log_dir``."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, concurrency: int = 2) -> None:
        self.env, self.log_dir, self.concurrency = env, log_dir, concurrency
        self.node = f"w{uuid.uuid4().hex[:8]}@%h"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.node.split('@')[0]}.log"

    def start(self) -> WorkerProcess:
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

    def is_ready(self) -> bool:
        prefix = self.node.split("@")[0] + "@"
        replies = app.control.ping(timeout=0.5) or []
        return any(name.startswith(prefix) for reply in replies for name in reply)

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.proc.returncode}; see {self.log_path}"
                )
            if self.is_ready():
                return self
        raise TimeoutError(f"worker not ready after {timeout} s; see {self.log_path}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown: running tasks finish
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_env(**overrides: str) -> dict[str, str]:
    """This process's environment, pinned to the same database and Redis."""
    env = dict(os.environ)
    env["REDIS_URL"] = settings.REDIS_URL
    env.update(overrides)
    return env


class ManageProcess:
    """``manage.py <command>`` in its own process group (simulator, streamer), logged to a file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManageProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", *self.args],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60.0) -> ManageProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return self
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited; see {self.log_path}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.args[0]} did not print {text!r}; see {self.log_path}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
