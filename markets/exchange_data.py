"""Public market data from exchanges (REST and WebSocket), honouring EXCHANGE_URL_OVERRIDES.

Only public endpoints are used here: no credentials ever reach these clients. The override
itself (``exchange_url_override``) is shared with the one signed client built outside the
hub, the check of new keys (subscriptions.keycheck).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from core.clock import market_now
from core.time_utils import datetime_to_ms, resolution_to_timedelta

# The exchange of strategies that trade on stored candles only: nothing to fetch or stream.
PAPER_EXCHANGE = "paper"

# ccxt puts the request's URL in some messages, and its query holds the signature (and, on
# exchanges that take the key in the query, the key).
_URL_QUERY = re.compile(r"\?\S*")


def exchange_error_text(exc: BaseException, *, limit: int = 2000) -> str:
    """An exchange error in words fit to store, log and show: any URL's query cut out."""
    return _URL_QUERY.sub("?…", f"{type(exc).__name__}: {exc}")[:limit]


def _rebase(value: Any, base: str, schemes: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _rebase(v, base, schemes) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(schemes):
        return base.rstrip("/") + urlsplit(value).path
    return value


def exchange_url_override(client: Any, exchange_id: str) -> Any:
    """Point a ccxt client at the stand-in EXCHANGE_URL_OVERRIDES names for its exchange, if
    any (after a sandbox switch, which replaces the URLs this moves)."""
    base = settings.EXCHANGE_URL_OVERRIDES.get(exchange_id)
    if not base:
        return client
    client.urls["api"] = _rebase(client.urls["api"], base, ("https://", "http://"))
    # A stand-in such as the simulator serves spot over ws://host:port/stream/ws; ccxt.pro's
    # Binance client treats a connection as spot only when its URL contains "/stream".
    ws_base = base.replace("https://", "wss://").replace("http://", "ws://")
    if isinstance(client.urls["api"].get("ws"), dict):
        client.urls["api"]["ws"] = {
            kind: (f"{ws_base.rstrip('/')}/stream/ws" if isinstance(url, str) else url)
            for kind, url in client.urls["api"]["ws"].items()
        }
    client.options["fetchMarkets"] = {"types": ["spot"]}
    client.options["fetchCurrencies"] = False
    client.options["fetchMargins"] = False
    return client


def exchange_public_client(exchange_id: str) -> Any:
    import ccxt

    client = getattr(ccxt, exchange_id)({"timeout": 10_000, "enableRateLimit": False})
    return exchange_url_override(client, exchange_id)


def exchange_stream_client(exchange_id: str) -> Any | None:
    """A ccxt.pro client for ``exchange_id``, or None when it has no WebSocket OHLCV."""
    import ccxt.pro

    if exchange_id not in ccxt.pro.exchanges:
        return None
    client = getattr(ccxt.pro, exchange_id)({"timeout": 10_000, "enableRateLimit": False})
    if not client.has.get("watchOHLCV"):
        return None
    return exchange_url_override(client, exchange_id)


def closed_rows(rows: list[list], *, resolution: str) -> list[list]:
    """Only the rows whose candle has closed by the market clock (never a partial one)."""
    step_ms = int(resolution_to_timedelta(resolution).total_seconds() * 1000)
    now_ms = datetime_to_ms(market_now())
    return [list(r) for r in rows if int(r[0]) + step_ms <= now_ms]
