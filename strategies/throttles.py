"""Per-user limits on the endpoints that make the platform run a strategy's code."""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

from core.api import _throttle_cache

STRATEGY_CHANGES = "strategy_changes"


class StrategyChangeThrottle(ScopedRateThrottle):
    """Deploys and settings changes per user (``throttle_scope`` of the view): every deploy
    costs a sandboxed dry run on a worker, every change reaches the running strategy."""

    @property
    def cache(self) -> Any:  # type: ignore[override]
        # In Redis, shared by every web process: a per-process count multiplies the limit.
        return _throttle_cache()

    def get_rate(self) -> str | None:
        # Read at request time (ScopedRateThrottle binds the rates at import), so a deployment
        # or a test can change REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] (strings like
        # "10/minute"; the stubs type them as numbers).
        rates: dict[str, str | None] = api_settings.DEFAULT_THROTTLE_RATES  # type: ignore[assignment]
        return rates[str(self.scope)]
