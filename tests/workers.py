"""Real Celery worker processes for integration tests, on the test database and test broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

from django.conf import settings
from django.db import connection

from tooling.processes import WorkerProcess, worker_env

T = TypeVar("T")


def test_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerPool:
    """``count`` worker nodes on the test database, started together and stopped together;
    ``queues`` limits them to those queues (default: the default queue, as ``celery worker``)."""

    running: ClassVar[list[WorkerPool]] = []  # every started pool, so a test can pause them

    def __init__(
        self,
        count: int = 1,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        queues: list[str] | None = None,
    ) -> None:
        self.count, self.concurrency, self.extra_env = count, concurrency, env or {}
        self.queues = queues
        self.workers: list[WorkerProcess] = []

    def start_one(self) -> WorkerProcess:
        env = worker_env(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            DATABASE_URL=test_database_url(),
            **self.extra_env,
        )
        worker = WorkerProcess(
            env=env,
            log_dir=settings.VAR_DIR / "test-workers",
            concurrency=self.concurrency,
            queues=self.queues,
        ).start()
        self.workers.append(worker)
        return worker

    def start(self) -> WorkerPool:
        started = [self.start_one() for _ in range(self.count)]
        for worker in started:
            worker.wait_ready()
        WorkerPool.running.append(self)
        return self

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        if self in WorkerPool.running:
            WorkerPool.running.remove(self)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: Callable[[], T], *, timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def other_pools_stop() -> None:
    """Stop every running pool (they would take this test's tasks). Their fixtures start them
    again when a later test asks for them: a run of such tests restarts them once, not per test."""
    for pool in list(WorkerPool.running):
        pool.stop()
