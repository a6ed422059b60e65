"""A small client for the simulator's admin API (tests, benchmarks, the live demo)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests

from core.time_utils import datetime_to_ms


class SimulatorClient:
    """The simulator's admin API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(f"{self.url}{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.post("/sim/reset")

    def refresh(self) -> None:
        self.post("/sim/refresh")

    def clock(self, when: datetime | None) -> None:
        self.post("/sim/clock", {"now_ms": datetime_to_ms(when) if when else None})

    def faults(self, **body: Any) -> Any:
        return self.post("/sim/faults", body)

    def account(self, api_key: str, secret: str, balances: dict[str, str], **extra: Any) -> None:
        self.post(
            "/sim/accounts", {"api_key": api_key, "secret": secret, "balances": balances, **extra}
        )

    def accounts(self, rows: list[dict[str, Any]]) -> None:
        self.post("/sim/accounts", rows)

    def account_edit(self, api_key: str, **changes: Any) -> Any:
        """Change an account behind the platform's back: balances, restrictions, revoked."""
        return self.post("/sim/accounts/edit", {"api_key": api_key, **changes})

    def order_place(self, api_key: str, **order: Any) -> Any:
        """An order placed on the account outside the platform (by its owner, say)."""
        response = self.http.post(
            f"{self.url}/sim/orders", json={"api_key": api_key, **order}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def request_rates(self, window_ms: int = 1000, since: int = 0) -> dict[str, Any]:
        params = {"window_ms": window_ms, "since": since}
        return self.http.get(f"{self.url}/sim/requests", params=params, timeout=10).json()

    def orders(self) -> list[dict[str, Any]]:
        return self.http.get(f"{self.url}/sim/orders", timeout=10).json()

    def stats(self) -> dict[str, int]:
        return self.http.get(f"{self.url}/sim/stats", timeout=10).json()
