"""Writes on strategies: deploy, settings and code changes, retirement, registry sync."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from execution.events import EventType, event_emit
from execution.registry import (
    market_key,
    registry_active_resolutions,
    registry_register,
    registry_replace,
    registry_unregister,
)
from execution.scheduling import schedule_sync
from execution.time_utils import normalize_resolution
from strategies.models import Strategy, StrategyVersion
from strategies.sandbox import inspect_code

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$")


def exchange_is_known(exchange: str) -> bool:
    import ccxt  # heavy import, only needed when validating

    return exchange == "paper" or exchange in ccxt.exchanges


def _validated_market(*, exchange: str, symbol: str, resolution: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not exchange_is_known(exchange):
        errors["exchange"] = f"unknown exchange {exchange!r}: use a ccxt exchange id or 'paper'"
    if not SYMBOL_RE.match(symbol or ""):
        errors["symbol"] = f"{symbol!r} is not a ccxt unified symbol such as 'ETH/BTC'"
    try:
        resolution = normalize_resolution(resolution)
    except (TypeError, ValueError) as exc:
        errors["resolution"] = str(exc)
    if errors:
        raise ValidationError(errors)
    return {"exchange": exchange, "symbol": symbol, "resolution": resolution}


def _validated_code(code: str) -> int:
    """Compile-check the code; return its LOOKBACK."""
    check = inspect_code(code)
    if not check.ok:
        raise ValidationError({"code": check.error})
    return check.lookback or django_settings.STRATEGY_DEFAULT_LOOKBACK


@transaction.atomic
def strategy_create(
    *,
    owner: AbstractBaseUser,
    name: str,
    code: str,
    exchange: str,
    symbol: str,
    resolution: str,
    description: str = "",
    settings: dict[str, Any] | None = None,
    is_public: bool = False,
    is_marketplace: bool = False,
) -> Strategy:
    market = _validated_market(exchange=exchange, symbol=symbol, resolution=resolution)
    lookback = _validated_code(code)
    strategy = Strategy.objects.create(
        owner=owner,
        name=name,
        description=description,
        code=code,
        lookback=lookback,
        settings=settings or {},
        is_public=is_public,
        is_marketplace=is_marketplace,
        timeout_s=django_settings.STRATEGY_TIMEOUT_S,
        **market,
    )
    StrategyVersion.objects.create(strategy=strategy, version=1, code=code, lookback=lookback)
    return strategy


@transaction.atomic
def strategy_update_settings(*, strategy: Strategy, settings: dict[str, Any]) -> Strategy:
    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    locked.settings = settings
    locked.settings_version += 1
    locked.save(update_fields=["settings", "settings_version", "updated_at"])
    event_emit(
        EventType.STRATEGY_SETTINGS_CHANGED,
        strategy_id=locked.pk,
        settings_version=locked.settings_version,
    )
    return locked


@transaction.atomic
def strategy_update_code(*, strategy: Strategy, code: str) -> Strategy:
    lookback = _validated_code(code)
    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    locked.code, locked.lookback = code, lookback
    locked.code_version += 1
    locked.save(update_fields=["code", "lookback", "code_version", "updated_at"])
    StrategyVersion.objects.create(
        strategy=locked, version=locked.code_version, code=code, lookback=lookback
    )
    return locked


@transaction.atomic
def strategy_retire(*, strategy: Strategy) -> Strategy:
    """Stop a strategy for good: its subscriptions are paused and it leaves the registry."""
    from subscriptions.services import subscription_pause  # subscriptions depend on strategies

    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    locked.status = Strategy.Status.RETIRED
    locked.save(update_fields=["status", "updated_at"])
    for subscription in locked.subscriptions.filter(status="active"):
        subscription_pause(subscription=subscription, reason="strategy retired")
    transaction.on_commit(lambda: strategy_registry_sync(strategy_id=locked.pk))
    return locked


def strategy_registry_sync(*, strategy_id: int) -> bool:
    """Make the registry match the database for one strategy; return whether it is registered.

    It reads the committed state instead of applying a delta, so callbacks of concurrent
    subscribe/cancel transactions converge whatever order they run in.
    """
    strategy = Strategy.objects.get(pk=strategy_id)
    key = market_key(
        exchange=strategy.exchange, symbol=strategy.symbol, resolution=strategy.resolution
    )
    before = registry_active_resolutions()
    runs = strategy.status == Strategy.Status.ACTIVE and strategy.subscriber_count > 0
    if runs:
        registry_register(strategy_id=strategy_id, key=key)
    else:
        registry_unregister(strategy_id=strategy_id, key=key)
    after = registry_active_resolutions()
    if after != before:
        schedule_sync(active_resolutions=after)
    return runs


def registry_rebuild() -> int:
    """Rebuild the whole registry and the beat schedule from the database (on start)."""
    running = Strategy.objects.filter(status=Strategy.Status.ACTIVE, subscriber_count__gt=0)
    entries = [
        (s.pk, market_key(exchange=s.exchange, symbol=s.symbol, resolution=s.resolution))
        for s in running.only("id", "exchange", "symbol", "resolution")
    ]
    registry_replace(entries=entries)
    schedule_sync(active_resolutions={key.rsplit(":", 1)[1] for _, key in entries})
    return len(entries)


def strategy_deploy(*, owner: AbstractBaseUser, **fields: Any) -> Strategy:
    """What ``POST /api/strategies/deploy`` calls: create the strategy, then the deploy checks.

    ``strategy_create`` already compiles the code and checks its entry point. The dry run on
    sample candles (issue 5) belongs here, after the create and inside the same transaction,
    so a failed dry run leaves nothing behind.
    """
    with transaction.atomic():
        return strategy_create(owner=owner, **fields)
