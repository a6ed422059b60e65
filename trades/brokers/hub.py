"""The process's gateway to exchanges: one asyncio loop, one HTTP session, a pool of instances.

Every ccxt call of a worker process runs on one event loop in a background thread, so that the
things that are expensive to build survive from one fan-out to the next:

* one aiohttp session and one SSL context, shared by every instance (a ccxt instance builds its
  own by default: tens of milliseconds each);
* one *template* instance per (exchange, sandbox) holding the markets, loaded once and cached in
  Redis for every other process (``load_markets`` of a large exchange takes a good part of a
  second);
* one instance per credential, built from the template (``set_markets_from_exchange``), kept
  in a bounded LRU pool. Keys are never swapped on a shared instance: ccxt's throttle awaits
  before signing, so concurrent orders on one instance with swapped keys get signed with
  whichever keys are set at that moment, i.e. another subscriber's.

Keys reach this module decrypted, in memory only, from the fan-out work; nothing here writes
them anywhere.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import hashlib
import json
import logging
import os
import ssl
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import certifi
import redis.asyncio as aioredis
from django.conf import settings

from core.logs import log_context, log_context_current
from trades.ratelimit import AsyncRateLimiter, Bucket, bucket_for_credential, bucket_for_exchange

logger = logging.getLogger(__name__)

T = TypeVar("T")
Exchange = Any  # a ccxt.async_support exchange instance


class ExchangeUnsupported(RuntimeError):
    """The exchange id is not a ccxt exchange, or it has no sandbox for a sandbox credential."""


@dataclass(frozen=True)
class Keys:
    api_key: str
    secret: str
    passphrase: str = ""

    def __repr__(self) -> str:  # never print a secret, even in a traceback's locals
        return "Keys(***)"


@dataclass(frozen=True)
class CredentialRef:
    """A credential as the hub needs it. ``keys`` is None when the pool already holds it."""

    id: int
    exchange: str
    is_sandbox: bool
    fingerprint: str  # of the ciphertext: a rotated or edited credential gets a new instance
    keys: Keys | None = None
    # Why the keys cannot be had (e.g. they cannot be decrypted): nothing is sent with it.
    unusable: str = ""

    def __repr__(self) -> str:
        return f"CredentialRef({self.id}, {self.exchange}, sandbox={self.is_sandbox})"


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def url_override(exchange_id: str) -> str | None:
    return settings.EXCHANGE_URL_OVERRIDES.get(exchange_id)


def _rebase_urls(value: Any, base: str) -> Any:
    """Every http(s) URL in ccxt's ``urls['api']`` tree, moved to ``base`` (path kept)."""
    if isinstance(value, dict):
        return {k: _rebase_urls(v, base) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        parts = urlsplit(value)
        return base.rstrip("/") + parts.path
    return value


class Hub:
    """One per process (see ``get_hub``); everything but ``run`` lives on the hub's loop."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._serve, name="exchange-hub", daemon=True)
        self._thread.start()
        self.session: aiohttp.ClientSession | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.templates: dict[tuple[str, bool], Exchange] = {}
        self._template_locks: dict[tuple[str, bool], asyncio.Lock] = {}
        self.instances: OrderedDict[int, tuple[str, Exchange]] = OrderedDict()
        # Read from other threads (which credentials need decrypting); written on the loop.
        self.fingerprints: dict[int, str] = {}
        self.configured: set[tuple[int, str, str, str]] = set()  # leverage / margin mode set
        self._redis: aioredis.Redis | None = None
        self._limiter: AsyncRateLimiter | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.grown = False  # instances were added since the last freeze_pool()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        """Close the session and instances, and end the loop's thread."""
        with contextlib.suppress(Exception):
            self.run(self.close(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run a coroutine on the hub's loop from any other thread, and wait for it."""
        # The caller's log ids follow its requests onto the hub's thread.
        ids = log_context_current()
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro, ids), self.loop)
        return future.result(timeout)

    # --- shared resources ----------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.ssl_context = ssl.create_default_context(cafile=certifi.where())
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context,
                limit=0,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
                # How long an idle connection is kept for the next request (the next close's
                # orders, the warm-up's connections): see EXCHANGE_KEEPALIVE_S.
                keepalive_timeout=settings.EXCHANGE_KEEPALIVE_S,
            )
            self.session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self.session

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            # Hundreds of orders in flight share a few connections: wait for one, don't fail.
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_APP_URL, max_connections=32, timeout=30, decode_responses=True
            )
            self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    @property
    def limiter(self) -> AsyncRateLimiter:
        if self._limiter is None:
            self._limiter = AsyncRateLimiter(self.redis)
        return self._limiter

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(max(1, settings.EXCHANGE_CONCURRENCY))
        return self._semaphore

    def buckets(self, credential: CredentialRef) -> tuple[Bucket, Bucket]:
        return (
            bucket_for_credential(
                credential_id=credential.id, rate=settings.EXCHANGE_RATE_PER_CREDENTIAL
            ),
            bucket_for_exchange(
                exchange_id=credential.exchange, rate=settings.EXCHANGE_RATE_PER_EXCHANGE
            ),
        )

    # --- instances -----------------------------------------------------------------------
    def _new_instance(self, exchange_id: str, sandbox: bool, keys: Keys | None) -> Exchange:
        cls = getattr(ccxt_async, exchange_id, None)
        if exchange_id not in ccxt.exchanges or cls is None:
            raise ExchangeUnsupported(f"'{exchange_id}' is not an exchange ccxt supports")
        session = self._session()
        config: dict[str, Any] = {
            "session": session,
            "ssl_context": self.ssl_context,
            "asyncio_loop": self.loop,
            "timeout": settings.EXCHANGE_TIMEOUT_MS,
            # Rate limits are kept in Redis for every process; ccxt's is per instance.
            "enableRateLimit": False,
            "options": _exchange_options(exchange_id),
        }
        if keys is not None:
            config.update(apiKey=keys.api_key, secret=keys.secret)
            if keys.passphrase:
                config["password"] = keys.passphrase
        exchange = cls(config)
        if sandbox:
            try:
                # ccxt 4.5 fails with a TypeError, not NotSupported, when urls['test'] is None.
                if not exchange.urls.get("test"):
                    raise ccxt.NotSupported(f"{exchange_id} does not have a sandbox URL")
                exchange.set_sandbox_mode(True)
            except (ccxt.NotSupported, TypeError) as exc:
                _detach(exchange)
                raise ExchangeUnsupported(
                    f"{exchange_id} has no sandbox (testnet) in ccxt; this credential is marked "
                    "is_sandbox"
                ) from exc
        base = url_override(exchange_id)
        if base:
            exchange.urls["api"] = _rebase_urls(exchange.urls["api"], base)
        return exchange

    def _template_lock(self, key: tuple[str, bool]) -> asyncio.Lock:
        return self._template_locks.setdefault(key, asyncio.Lock())

    async def template(self, exchange_id: str, sandbox: bool) -> Exchange:
        """The keyless instance that owns the markets of (exchange, sandbox)."""
        key = (exchange_id, sandbox)
        if key in self.templates:
            return self.templates[key]
        async with self._template_lock(key):
            if key not in self.templates:
                template = self._new_instance(exchange_id, sandbox, None)
                await self._load_markets(template, key)
                self.templates[key] = template
        return self.templates[key]

    def _markets_key(self, key: tuple[str, bool]) -> str:
        base = url_override(key[0]) or "default"
        return f"exchange:markets:{key[0]}:{'sandbox' if key[1] else 'live'}:{fingerprint(base)}"

    async def _load_markets(self, template: Exchange, key: tuple[str, bool]) -> None:
        redis_key = self._markets_key(key)
        try:
            cached = await self.redis.get(redis_key)
        except Exception:  # the cache is an optimisation; the exchange is the source
            logger.warning("markets cache unavailable", exc_info=True)
            cached = None
        if cached:
            data = json.loads(cached)
            template.set_markets(data["markets"], data.get("currencies") or None)
            return
        await template.load_markets()
        body = json.dumps({"markets": template.markets, "currencies": template.currencies})
        try:
            await self.redis.set(redis_key, body, ex=settings.EXCHANGE_MARKETS_TTL_S)
        except Exception:
            logger.warning("could not cache markets", exc_info=True)

    async def instance(self, credential: CredentialRef) -> Exchange:
        held = self.instances.get(credential.id)
        if held is not None and held[0] == credential.fingerprint:
            self.instances.move_to_end(credential.id)
            return held[1]
        template = await self.template(credential.exchange, credential.is_sandbox)
        if credential.keys is None:
            raise RuntimeError(f"{credential!r} is not pooled and came without keys")
        exchange = self._new_instance(credential.exchange, credential.is_sandbox, credential.keys)
        exchange.set_markets_from_exchange(template)
        if held is not None:
            _detach(held[1])
        self.instances[credential.id] = (credential.fingerprint, exchange)
        self.fingerprints[credential.id] = credential.fingerprint
        self.grown = True
        while len(self.instances) > max(1, settings.EXCHANGE_POOL_MAX_INSTANCES):
            old_id, (_, old) = self.instances.popitem(last=False)
            self.fingerprints.pop(old_id, None)
            _detach(old)
        return exchange

    def freeze_pool(self) -> None:
        """Take the pooled instances out of the cyclic garbage collector's sight.

        A ccxt instance is a large graph of dicts; with hundreds pooled, every full collection
        walks them all, and full collections come often while a batch allocates its rows
        (measured: a 500-subscriber live batch took 0.93 s with the pool tracked, 0.61 s
        frozen). ``gc.freeze`` is O(1); objects still go when their last reference does.
        """
        if self.grown:
            self.grown = False
            gc.freeze()

    def is_pooled(self, credential_id: int, fingerprint_: str) -> bool:
        return self.fingerprints.get(credential_id) == fingerprint_

    async def close(self) -> None:
        for _, exchange in self.instances.values():
            _detach(exchange)
        for exchange in self.templates.values():
            _detach(exchange)
        self.instances.clear()
        self.templates.clear()
        self.fingerprints.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def _exchange_options(exchange_id: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if exchange_id == "binance" and url_override(exchange_id):
        # A stand-in (the simulator) serves spot only: don't ask it for futures markets.
        options["fetchMarkets"] = {"types": ["spot"]}
        options["fetchMargins"] = False
        options["fetchCurrencies"] = False
    return options


def _detach(exchange: Exchange) -> None:
    # The session is shared: an instance must neither close it nor warn that it is open.
    exchange.session = None
    exchange.tcp_connector = None


async def _as_coroutine(awaitable: Awaitable[T], ids: dict[str, Any]) -> T:
    with log_context(**ids):
        return await awaitable


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()


_hub: Hub | None = None
_hub_lock = threading.Lock()


def get_hub() -> Hub:
    """This process's hub; a forked child builds its own (loops and sockets don't survive fork)."""
    global _hub
    with _hub_lock:
        if _hub is None or _hub.pid != os.getpid():
            _hub = Hub()
        return _hub


def hub_reset() -> None:
    """Stop this process's hub (its session, connections and pool); the next ``get_hub``
    builds a new one, as a freshly started worker process has."""
    global _hub
    with _hub_lock:
        hub, _hub = _hub, None
    if hub is not None and hub.pid == os.getpid():
        hub.stop()


def hub_run(factory: Callable[[Hub], Awaitable[T]], timeout: float | None = None) -> T:
    hub = get_hub()
    return hub.run(factory(hub), timeout)


@atexit.register
def _close_hub() -> None:
    hub = _hub
    if hub is None or hub.pid != os.getpid():
        return
    hub.stop()  # best effort at interpreter exit
