"""Writes on strategies: deploy, settings and code changes, retirement, registry sync."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from kombu.exceptions import OperationalError as KombuOperationalError

from core.events import EventType, event_emit
from core.redis_client import get_redis
from core.time_utils import normalize_resolution
from markets.registry import (
    market_key,
    registry_active_resolutions,
    registry_register,
    registry_replace,
    registry_unregister,
)
from markets.schedule import schedule_sync
from notifications.models import NotificationEvent
from notifications.services import Notice, notifications_record
from strategies.models import Strategy, StrategyVersion
from strategies.sandbox import dry_run, inspect_code
from strategies.selectors import strategy_dry_run_candles
from strategies.signals import InvalidSignal, signal_parse

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$")
# Where the compiler and the sandbox say what went wrong: "... (line 8)".
LINE_RE = re.compile(r"\(line (\d+)\)")


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
    """The dry run could not take place for reasons that are not the author's (no worker
    answered in time, or the sandbox is refused or broken there): a server error, not a 400."""


class StrategyChangedMeanwhile(Exception):
    """The other half of what a change was dry-run with (the code for a settings change, the
    settings for a code change) changed while it ran: what was checked is not what would be
    stored, so nothing is (the API answers 409; the author retries)."""


DRY_RUN_ERROR_CHARS = 4000
DRY_RUN_REPLY_KEY = "strategy:dry_run:{request_id}"
DRY_RUN_POLL_SLICE_S = 2.0
DRY_RUN_POLL_MIN_S = 0.01


@dataclass(frozen=True)
class DryRunVerdict:
    """What a worker found when it dry-ran a strategy; crosses the broker and Redis as JSON."""

    ok: bool
    error: str = ""  # the message for the author (or, when unavailable, for the operator)
    unavailable: bool = False  # the platform's failure, not the code's
    checked_by_pid: int = 0  # the process that ran the check (a worker's pool process)

    def as_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> DryRunVerdict:
        return cls(**json.loads(text))


def strategy_dry_run_timeout_s() -> float:
    """The dry run's wall-clock limit: STRATEGY_DRY_RUN_TIMEOUT_S, and never more than half
    the execution timeout, so a deploy can never cost what an execution is allowed to."""
    execution_s = min(django_settings.STRATEGY_TIMEOUT_S, django_settings.STRATEGY_MAX_TIMEOUT_S)
    return min(django_settings.STRATEGY_DRY_RUN_TIMEOUT_S, execution_s / 2)


def strategy_dry_run(
    *,
    code: str,
    exchange: str,
    symbol: str,
    resolution: str,
    settings: dict[str, Any],
    lookback: int,
) -> DryRunVerdict:
    """Run the code once in the sandbox, here, on the market's stored candles (synthetic ones
    when the store has too few), and judge its result. Only workers call this (the task
    strategies.tasks.strategy_dry_run): untrusted code never runs in a web process."""
    candles = strategy_dry_run_candles(
        exchange=exchange, symbol=symbol, resolution=resolution, lookback=lookback
    )
    result = dry_run(
        code=code,
        candles=candles,
        settings=settings,
        timeout_s=strategy_dry_run_timeout_s(),
        memory_mb=django_settings.STRATEGY_MEMORY_MB,
        lookback=lookback,
        require_isolation=django_settings.STRATEGY_SANDBOX_REQUIRE_ISOLATION,
        isolation_mode=django_settings.STRATEGY_SANDBOX_ISOLATION,
    )
    pid = os.getpid()
    if not result.ok:
        if result.sandbox_failure:
            error = f"the strategy could not be checked: {result.error}"
            return DryRunVerdict(False, error, unavailable=True, checked_by_pid=pid)
        error = f"dry run failed: {result.error[:DRY_RUN_ERROR_CHARS]}"
        return DryRunVerdict(False, error, checked_by_pid=pid)
    try:
        signal_parse(result.value, market_price=Decimal(str(candles[-1][4])))
    except InvalidSignal as exc:
        error = f"dry run returned an invalid signal: {exc}"
        return DryRunVerdict(False, error, checked_by_pid=pid)
    return DryRunVerdict(True, checked_by_pid=pid)


def strategy_dry_run_answer(*, request_id: str, **spec: Any) -> DryRunVerdict:
    """Dry-run the code and hand the verdict to the request waiting for it (on a worker)."""
    verdict = strategy_dry_run(**spec)
    key = DRY_RUN_REPLY_KEY.format(request_id=request_id)
    # The key outlives the wait, then goes: an answer nobody waits for any more is dropped.
    ttl_s = math.ceil(django_settings.STRATEGY_DRY_RUN_WAIT_S) + 60
    with get_redis().pipeline() as pipe:
        pipe.rpush(key, verdict.as_json())
        pipe.expire(key, ttl_s)
        pipe.execute()
    return verdict


def strategy_dry_run_on_worker(
    *,
    code: str,
    exchange: str,
    symbol: str,
    resolution: str,
    settings: dict[str, Any],
    lookback: int,
) -> DryRunVerdict:
    """Queue the dry run for a worker and wait, at most STRATEGY_DRY_RUN_WAIT_S, for its
    verdict; StrategyCheckUnavailable when none came."""
    from strategies.tasks import strategy_dry_run as dry_run_task  # the task calls services

    request_id = uuid.uuid4().hex
    wait_s = django_settings.STRATEGY_DRY_RUN_WAIT_S
    # Sent now, not on commit: the task carries everything as JSON and refers to no row, and
    # this caller waits for it (a deploy checks its code before opening any transaction).
    # A dry run still queued when the wait is over expires: no worker spends time on it.
    try:
        dry_run_task.apply_async(
            kwargs={
                "request_id": request_id,
                "code": code,
                "exchange": exchange,
                "symbol": symbol,
                "resolution": resolution,
                "settings": settings,
                "lookback": lookback,
            },
            queue=django_settings.STRATEGY_DRY_RUN_QUEUE,
            expires=wait_s,
        )
        reply = _dry_run_reply(request_id=request_id, wait_s=wait_s)
    except (KombuOperationalError, redis.RedisError) as exc:
        raise StrategyCheckUnavailable(f"the dry run could not be queued: {exc}") from exc
    if reply is None:
        raise StrategyCheckUnavailable(f"no worker dry-ran the strategy within {wait_s} s")
    return DryRunVerdict.from_json(reply)


def _dry_run_reply(*, request_id: str, wait_s: float) -> str | bytes | None:
    key = DRY_RUN_REPLY_KEY.format(request_id=request_id)
    deadline = time.monotonic() + wait_s
    while (remaining := deadline - time.monotonic()) > 0:
        # In slices shorter than the client's socket timeout (5 s by default in redis-py),
        # which would otherwise cut a longer BLPOP short with an error, and never 0 ms,
        # which Redis reads as "block forever".
        timeout = max(min(remaining, DRY_RUN_POLL_SLICE_S), DRY_RUN_POLL_MIN_S)
        reply = get_redis().blpop([key], timeout=timeout)
        if reply is not None:
            return reply[1]
    return None


def _validated_code(
    *,
    code: str,
    exchange: str,
    symbol: str,
    resolution: str,
    settings: dict[str, Any],
    field: str = "code",
) -> int:
    """Compile the code and check its entry point here (static checks run nothing), then
    have a worker dry-run it. Returns its LOOKBACK; raises ValidationError({field: message
    with the line number}) when the author must fix it."""
    check = inspect_code(code)
    if not check.ok:
        raise ValidationError({field: check.error})
    lookback = check.lookback or django_settings.STRATEGY_DEFAULT_LOOKBACK
    verdict = strategy_dry_run_on_worker(
        code=code,
        exchange=exchange,
        symbol=symbol,
        resolution=resolution,
        settings=settings,
        lookback=lookback,
    )
    if verdict.unavailable:
        raise StrategyCheckUnavailable(verdict.error)
    if not verdict.ok:
        raise ValidationError({field: verdict.error})
    return lookback


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
    """Deploy a strategy: checks the market and the code (including a sandboxed dry run on a
    worker, waited for before any transaction is opened), then stores it with its version 1:
    a strategy exists, and can run, only once its dry run passed."""
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


def _market_of(strategy: Strategy) -> dict[str, str]:
    return {
        "exchange": strategy.exchange,
        "symbol": strategy.symbol,
        "resolution": strategy.resolution,
    }


def strategy_settings_check(*, strategy: Strategy, settings: dict[str, Any]) -> None:
    """Have a worker dry-run the strategy's current code with these settings, as a deploy
    does; ValidationError on "settings" with the message and the line when they break it."""
    _validated_code(code=strategy.code, settings=settings, field="settings", **_market_of(strategy))


def strategy_change_settings(*, strategy: Strategy, settings: dict[str, Any]) -> Strategy:
    """What ``PUT /api/strategies/{id}/settings`` calls: the settings are dry-run first;
    refused ones notify the author and change nothing. Call it outside any transaction: it
    waits for the worker."""
    try:
        strategy_settings_check(strategy=strategy, settings=settings)
    except ValidationError as refusal:
        strategy_change_refused(
            strategy=strategy, change="settings", proposed=settings, refusal=refusal
        )
        raise
    return strategy_update_settings(
        strategy=strategy, settings=settings, checked_code_version=strategy.code_version
    )


@transaction.atomic
def strategy_update_settings(
    *, strategy: Strategy, settings: dict[str, Any], checked_code_version: int | None = None
) -> Strategy:
    """Store new settings, bump their version and publish the change. No dry run here: the
    API and the admin check them first (``strategy_settings_check``); tests and benchmarks
    script signals through it directly. ``checked_code_version``: the code version the check
    ran, which must still be the stored one."""
    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    if checked_code_version is not None and locked.code_version != checked_code_version:
        raise StrategyChangedMeanwhile("the code changed while the settings were checked")
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
    """Replace the code after the same checks as on deploy, dry-run with the current
    settings; every change is a new immutable StrategyVersion (submitting the current code
    again changes nothing). A refusal notifies the author and changes nothing. Call it
    outside any transaction: it waits for the worker."""
    if code == strategy.code:
        return strategy
    try:
        lookback = _validated_code(
            code=code, settings=strategy.settings or {}, **_market_of(strategy)
        )
    except ValidationError as refusal:
        strategy_change_refused(strategy=strategy, change="code", proposed=code, refusal=refusal)
        raise
    with transaction.atomic():
        return _strategy_new_version(strategy=strategy, code=code, lookback=lookback)


def _strategy_new_version(*, strategy: Strategy, code: str, lookback: int) -> Strategy:
    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    if locked.settings_version != strategy.settings_version:
        raise StrategyChangedMeanwhile("the settings changed while the code was checked")
    locked.code, locked.lookback = code, lookback
    locked.code_version += 1
    locked.save(update_fields=["code", "lookback", "code_version", "updated_at"])
    StrategyVersion.objects.create(
        strategy=locked, version=locked.code_version, code=code, lookback=lookback
    )
    return locked


def strategy_change_refused(
    *, strategy: Strategy, change: str, proposed: Any, refusal: ValidationError
) -> None:
    """Tell the author that a change of ``change`` ("code" or "settings") was refused, with
    the error and its line. Committed on its own (durable): the refusal stores nothing else,
    and the 400 that follows must not take the notification with it. The same change refused
    again on the same versions is one notification (the key names it)."""
    error = refusal.messages[0]
    digest = hashlib.sha256(json.dumps(proposed, sort_keys=True).encode()).hexdigest()[:16]
    versions = f"v{strategy.code_version}.s{strategy.settings_version}"
    notice = Notice(
        user_id=strategy.owner_id,
        event=NotificationEvent.CHANGE_REFUSED,
        key=f"{NotificationEvent.CHANGE_REFUSED.value}:{strategy.pk}:{change}:{versions}:{digest}",
        payload={
            "strategy_id": strategy.pk,
            "strategy_name": strategy.name,
            "change": change,
            "error": error,
            "line": _error_line(error),
            "code_version": strategy.code_version,
            "settings_version": strategy.settings_version,
        },
    )
    with transaction.atomic(durable=True):
        notifications_record(notices=[notice])


def _error_line(error: str) -> int | None:
    """The line the sandbox or the compiler named ("... (line 8)"), on the message's first
    line (what follows is the traceback)."""
    found = LINE_RE.search(error.split("\n", 1)[0])
    return int(found.group(1)) if found else None


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
    """Rebuild the whole registry and the beat schedule from the database (on start).

    A subscribe or cancel committed while the rebuild runs has its own registry sync, which the
    replace may wipe out (it ran between our read and our replace): the database is read again
    after the replace and every strategy that changed in between is synced once more. A change
    committed after that second read is synced by its own callback, after the replace."""
    entries = _registry_entries()
    registry_replace(entries=entries)
    schedule_sync(active_resolutions={key.rsplit(":", 1)[1] for _, key in entries})
    for strategy_id, key in set(entries) ^ set(_registry_entries()):
        try:
            strategy_registry_sync(strategy_id=strategy_id)
        except Strategy.DoesNotExist:  # deleted meanwhile
            registry_unregister(strategy_id=strategy_id, key=key)
    return len(entries)


def _registry_entries() -> list[tuple[int, str]]:
    running = Strategy.objects.filter(status=Strategy.Status.ACTIVE, subscriber_count__gt=0)
    return [
        (s.pk, market_key(exchange=s.exchange, symbol=s.symbol, resolution=s.resolution))
        for s in running.only("id", "exchange", "symbol", "resolution")
    ]


def strategy_deploy(*, owner: User, **fields: Any) -> Strategy:
    """What ``POST /api/strategies/deploy`` calls. ``strategy_create`` compiles the code,
    checks its entry point and has a worker dry-run it before anything is stored, so a
    rejected strategy leaves nothing behind."""
    return strategy_create(owner=owner, **fields)
