"""Typed platform events, delivered in process and published on Redis pub/sub.

Events are emitted after the surrounding transaction commits, so no listener ever sees a
state change that is later rolled back.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from core.redis_client import get_redis

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "events:"


class EventType(StrEnum):
    CANDLE_CLOSE = "candle.close"
    EXECUTION_START = "strategy.execution.start"
    EXECUTION_COMPLETE = "strategy.execution.complete"
    EXECUTION_ERROR = "strategy.execution.error"
    STRATEGY_SETTINGS_CHANGED = "strategy.settings.changed"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_CANCELLED = "subscription.cancelled"
    SUBSCRIPTION_PAUSED = "subscription.paused"
    SUBSCRIPTION_RESUMED = "subscription.resumed"
    TRADE_CREATED = "trade.created"
    TRADE_FILLED = "trade.filled"
    TRADE_CLOSED = "trade.closed"
    DIVERGENCE_FOUND = "subscription.divergence"


@dataclass(frozen=True)
class Event:
    type: EventType
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        body = {
            "id": self.id,
            "type": str(self.type),
            "occurred_at": self.occurred_at.isoformat(),
            "payload": self.payload,
        }
        return json.dumps(body, cls=DjangoJSONEncoder)


Handler = Callable[[Event], None]
_handlers: dict[EventType, list[Handler]] = defaultdict(list)


def event_subscribe(*, event_type: EventType, handler: Handler) -> Callable[[], None]:
    """Register an in-process handler; returns a function that removes it."""
    _handlers[event_type].append(handler)
    return lambda: _handlers[event_type].remove(handler)


def event_channel(event_type: EventType) -> str:
    """The pub/sub channel of an event type: ``events:<app db>:<type>``.

    Pub/sub ignores Redis database numbers, so two deployments (or test runs) sharing one Redis
    would hear each other's events; the app database they keep their data in tells them apart.
    """
    db = get_redis().connection_pool.connection_kwargs.get("db", 0)
    return f"{CHANNEL_PREFIX}{db}:{event_type}"


def _deliver(events: Sequence[Event]) -> None:
    for event in events:
        for handler in list(_handlers[event.type]):
            try:
                handler(event)
            except Exception:  # a listener's bug must never break the platform's work
                logger.exception("event handler failed for %s", event.type)
    try:
        # One round trip for the lot: a fan-out batch announces thousands of fills at once.
        pipe = get_redis().pipeline(transaction=False)
        for event in events:
            pipe.publish(event_channel(event.type), event.to_json())
        pipe.execute()
    except Exception:  # pub/sub is best effort; the database holds the truth
        logger.warning("could not publish %d events to redis", len(events), exc_info=True)


def event_emit(event_type: EventType, **payload: Any) -> Event:
    event = Event(type=event_type, payload=payload)
    transaction.on_commit(lambda: _deliver([event]))
    return event


def events_emit(*, events: Sequence[tuple[EventType, dict[str, Any]]]) -> list[Event]:
    """Emit many events, delivered together (in this order) once the transaction commits."""
    batch = [Event(type=event_type, payload=payload) for event_type, payload in events]
    if batch:
        transaction.on_commit(lambda: _deliver(batch))
    return batch
