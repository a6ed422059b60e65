from __future__ import annotations

import pytest

from tests.notifications.receiver import Receiver


@pytest.fixture
def receiver_for():
    """Start receivers answering with the given statuses; each is stopped after the test."""
    started: list[Receiver] = []

    def start(statuses: list[int], *, hold_first: bool = False, location: str = "") -> Receiver:
        receiver = Receiver(statuses, hold_first=hold_first, location=location).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
