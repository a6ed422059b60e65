from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from core.metrics import process_identifier
from core.redis_client import get_redis
from tests.api.stats import FUZZ
from tests.factories import UserFactory
from tests.trades.live import SimulatorProcess
from tests.workers import WorkerPool, test_database_url
from tooling.live_processes import QueueWorker, free_port
from tooling.processes import worker_env

DRY_RUN_QUEUE = "strategy-dry-runs-tests"


def pytest_sessionstart(session):
    """This run's processes count from zero: earlier runs' metric files go (as a deployment
    empties the directory when it starts). This process's own stay: it opened them already,
    on importing the services, and would go on writing to deleted files."""
    own = f"_{process_identifier()}.db"
    for path in Path(django_settings.PROMETHEUS_MULTIPROC_DIR).glob("*.db"):
        if not path.name.endswith(own):
            path.unlink()


@pytest.fixture(autouse=True)
def _clean_app_redis():
    """Each test starts with an empty registry, no locks and no leftover events."""
    get_redis().flushdb()
    yield


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def other_user():
    return UserFactory()


@pytest.fixture(scope="session")
def _shared_pool(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        pool = WorkerPool(count=1, concurrency=2).start()
    yield pool
    pool.stop()


@pytest.fixture
def celery_workers(_shared_pool, django_db_blocker):
    """A real worker process (two pool processes) on the test database, shared by tests;
    started again here when a test that needed the queues to itself paused it."""
    if not _shared_pool.workers:
        with django_db_blocker.unblock():
            _shared_pool.start()
    return _shared_pool


@pytest.fixture(scope="session")
def dry_run_worker(django_db_setup, django_db_blocker):
    """A real worker taking only the dry-run queue, shared by the tests that deploy: it never
    takes another test's tasks, and no other worker takes its dry runs."""
    with django_db_blocker.unblock():
        env = worker_env(
            DJANGO_SETTINGS_MODULE="config.settings.test", DATABASE_URL=test_database_url()
        )
        worker = QueueWorker(
            queue=DRY_RUN_QUEUE,
            env=env,
            log_dir=django_settings.VAR_DIR / "test-workers",
            concurrency=1,
        )
        try:
            worker.start().wait_ready()
            yield worker
        finally:
            worker.stop()


@pytest.fixture(scope="session")
def simulator_process(django_db_setup, django_db_blocker):
    """One exchange simulator process for the session, on the test database (reset for each
    test that uses it): the stand-in for an exchange, over real HTTP, for ccxt."""
    with django_db_blocker.unblock():
        process = SimulatorProcess(
            port=free_port(), log_dir=django_settings.VAR_DIR / "test-workers"
        ).start()
    yield process
    process.stop()


@pytest.fixture
def dry_runs_on_worker(dry_run_worker, settings):
    """Deploys in this test have their code dry-run by ``dry_run_worker``."""
    settings.STRATEGY_DRY_RUN_QUEUE = dry_run_worker.queue
    # A loaded test machine may be slow to answer, never wrong: wait long rather than fail.
    settings.STRATEGY_DRY_RUN_WAIT_S = 120.0
    return dry_run_worker


@pytest.fixture
def everything(admin_user):
    """At least one row of every model in the admin, with the awkward values filled in
    (markup in messages, multi-line errors, a failure, a rejection, a pause)."""
    from tests.admin_data import admin_data_create

    return admin_data_create(owner=admin_user)


@pytest.fixture
def purge_broker():
    from config.celery_app import app

    app.control.purge()
    yield


def pytest_collection_modifyitems(items):
    """Two tests under one id would run once under pytest-xdist (it schedules by id)."""
    twice = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if twice:
        raise pytest.UsageError(f"tests collected under the same id: {sorted(twice)[:5]}")


# --- the schemathesis run's figures, printed once at the end, with or without pytest-xdist -----
def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and FUZZ.cases:  # an xdist worker: hand them to the controller
        workeroutput["fuzz"] = {"operations": FUZZ.operations, "data": FUZZ.as_data()}


@pytest.hookimpl(optionalhook=True)  # an xdist controller's hook
def pytest_testnodedown(node, error):
    fuzz = getattr(node, "workeroutput", {}).get("fuzz")
    if fuzz:
        FUZZ.merge(operations=fuzz["operations"], data=[tuple(row) for row in fuzz["data"]])


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """How many schemathesis cases ran (FUZZ_DETAIL=1: per operation and status too)."""
    if not FUZZ.cases:
        return
    terminalreporter.write_line(FUZZ.summary())
    if os.environ.get("FUZZ_DETAIL"):
        for (operation, status), count in sorted(FUZZ.detail.items()):
            terminalreporter.write_line(f"  {operation:50} {status} {count}")
