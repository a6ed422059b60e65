from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.api.helpers import client_for
from tests.factories import UserFactory
from tooling.simulator.client import SimulatorClient


@pytest.fixture
def me(db):
    return UserFactory()


@pytest.fixture
def them(db):
    return UserFactory()


@pytest.fixture
def api(me):
    """An API client authenticated as ``me``."""
    return client_for(me)


@pytest.fixture
def their_api(them):
    return client_for(them)


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def exchange(simulator_process, settings):
    """The exchange simulator standing in for binance (and its testnet), clean: new
    credentials are checked against it, never against a real exchange."""
    settings.EXCHANGE_URL_OVERRIDES = {"binance": simulator_process.url}
    client = SimulatorClient(simulator_process.url)
    client.reset()
    yield client
    client.reset()
