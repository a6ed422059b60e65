"""Real Celery worker processes for integration tests, on the test database and test broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from config.celery_app import app

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerPool:
    """Starts ``count`` worker processes (each its own node) and stops them on exit."""

    def __init__(self, count: int = 1, concurrency: int = 2) -> None:
        self.count, self.concurrency = count, concurrency
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = ROOT / ".var" / "test-workers"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            DATABASE_URL=test_database_url(),
            REDIS_URL=settings.REDIS_URL,
        )
        return env

    def start_one(self, index: int) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"worker{index}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker",
             "--loglevel=INFO", f"--concurrency={self.concurrency}", "--pool=prefork",
             "--without-gossip", "--without-mingle", "-n", f"test{index}-{os.getpid()}@%h"],
            cwd=ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start(self) -> WorkerPool:
        for index in range(self.count):
            self.start_one(index)
        self.wait_ready(self.count)
        return self

    def wait_ready(self, expected: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            mine = [r for r in replies if any(f"-{os.getpid()}@" in name for name in r)]
            if len(mine) >= expected:
                return
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a worker exited early; see {self.logs}")
        raise TimeoutError(f"workers not ready after {timeout} s; see {self.logs}")

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
