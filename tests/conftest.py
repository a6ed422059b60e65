from __future__ import annotations

import pytest

from core.redis_client import get_redis
from tests.factories import UserFactory
from tests.workers import WorkerPool


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
def celery_workers(django_db_setup, django_db_blocker):
    """A real worker process (two pool processes) on the test database, shared by tests."""
    with django_db_blocker.unblock():
        pool = WorkerPool(count=1, concurrency=2).start()
    yield pool
    pool.stop()


@pytest.fixture
def purge_broker():
    from config.celery_app import app

    app.control.purge()
    yield
