"""Writes on strategies: deploy, settings and code changes, retirement, registry sync."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.events import EventType, event_emit
from core.time_utils import (
    datetime_to_ms,
    normalize_resolution,
    resolution_to_timedelta,
    round_to_interval_boundary,
)
from markets.candles import candles_closed_window
from markets.registry import (
    market_key,
    registry_active_resolutions,
    registry_register,
    registry_replace,
    registry_unregister,
)
from markets.schedule import schedule_sync
from strategies.models import Strategy, StrategyVersion
from strategies.sandbox import inspect_code, run_strategy
from strategies.sandbox.samples import synthetic_candles
from strategies.signals import InvalidSignal, signal_parse

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


class StrategyCheckUnavailable(RuntimeError):
    """The dry run could not take place for reasons that are not the author's (the sandbox is
    refused or broken on this server): a server error, not a 400."""


DRY_RUN_ERROR_CHARS = 4000


def _validated_code(
    *, code: str, exchange: str, symbol: str, resolution: str, settings: dict[str, Any]
) -> int:
    """Compile the code, check its entry point, then dry-run it in the sandbox on the market's
    stored candles (synthetic ones when the store has too few). Returns its LOOKBACK; raises
    ValidationError({"code": message with the line number}) when the author must fix it."""
    check = inspect_code(code)
    if not check.ok:
        raise ValidationError({"code": check.error})
    lookback = check.lookback or django_settings.STRATEGY_DEFAULT_LOOKBACK
    candles = _dry_run_candles(
        exchange=exchange, symbol=symbol, resolution=resolution, lookback=lookback
    )
    result = run_strategy(
        code=code,
        candles=candles,
        settings=settings,
        timeout_s=min(django_settings.STRATEGY_TIMEOUT_S, django_settings.STRATEGY_MAX_TIMEOUT_S),
        memory_mb=django_settings.STRATEGY_MEMORY_MB,
        lookback=lookback,
        require_isolation=django_settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
        isolation_mode=django_settings.STRATEGY_SANDBOX_ISOLATION,
    )
    if not result.ok:
        if result.sandbox_failure:
            raise StrategyCheckUnavailable(f"the strategy could not be checked: {result.error}")
        raise ValidationError({"code": f"dry run failed: {result.error[:DRY_RUN_ERROR_CHARS]}"})
    try:
        signal_parse(result.value, market_price=Decimal(str(candles[-1][4])))
    except InvalidSignal as exc:
        raise ValidationError({"code": f"dry run returned an invalid signal: {exc}"}) from None
    return lookback


def _dry_run_candles(
    *, exchange: str, symbol: str, resolution: str, lookback: int
) -> list[list[float]]:
    stored = candles_closed_window(
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        close_time=timezone.now(),
        limit=lookback,
    )
    if len(stored) >= lookback:
        return stored
    step = resolution_to_timedelta(resolution)
    end = round_to_interval_boundary(timezone.now(), resolution)
    return synthetic_candles(
        count=lookback, step_ms=int(step.total_seconds() * 1000), end_ms=datetime_to_ms(end)
    )


def strategy_create(
    *,
    owner: User,
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
    """Deploy a strategy: checks the market and the code (including a sandboxed dry run, done
    before any transaction is opened), then stores it with its version 1."""
    market = _validated_market(exchange=exchange, symbol=symbol, resolution=resolution)
    lookback = _validated_code(code=code, settings=settings or {}, **market)
    with transaction.atomic():
        return _strategy_insert(
            owner=owner,
            name=name,
            description=description,
            code=code,
            lookback=lookback,
            settings=settings or {},
            is_public=is_public,
            is_marketplace=is_marketplace,
            market=market,
        )


def _strategy_insert(
    *,
    owner: User,
    name: str,
    description: str,
    code: str,
    lookback: int,
    settings: dict[str, Any],
    is_public: bool,
    is_marketplace: bool,
    market: dict[str, str],
) -> Strategy:
    strategy = Strategy.objects.create(
        owner=owner,
        name=name,
        description=description,
        code=code,
        lookback=lookback,
        settings=settings,
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


def strategy_update_code(*, strategy: Strategy, code: str) -> Strategy:
    """Replace the code after the same checks as on deploy; every change is a new immutable
    StrategyVersion (submitting the current code again changes nothing)."""
    if code == strategy.code:
        return strategy
    lookback = _validated_code(
        code=code,
        exchange=strategy.exchange,
        symbol=strategy.symbol,
        resolution=strategy.resolution,
        settings=strategy.settings or {},
    )
    with transaction.atomic():
        return _strategy_new_version(strategy_id=strategy.pk, code=code, lookback=lookback)


def _strategy_new_version(*, strategy_id: int, code: str, lookback: int) -> Strategy:
    locked = Strategy.objects.select_for_update().get(pk=strategy_id)
    locked.code, locked.lookback = code, lookback
    locked.code_version += 1
    locked.save(update_fields=["code", "lookback", "code_version", "updated_at"])
    StrategyVersion.objects.create(
        strategy=locked, version=locked.code_version, code=code, lookback=lookback
    )
    return locked


def strategy_mark_retired(*, strategy: Strategy) -> Strategy:
    """Lock the strategy and mark it retired; it leaves the registry once the caller commits.

    Call it inside the caller's transaction (``subscriptions.services.strategy_retire`` also
    pauses its subscriptions there)."""
    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    locked.status = Strategy.Status.RETIRED
    locked.save(update_fields=["status", "updated_at"])
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


def strategy_deploy(*, owner: User, **fields: Any) -> Strategy:
    """What ``POST /api/strategies/deploy`` calls. ``strategy_create`` compiles the code,
    checks its entry point and dry-runs it in the sandbox before anything is stored, so a
    rejected strategy leaves nothing behind."""
    return strategy_create(owner=owner, **fields)
