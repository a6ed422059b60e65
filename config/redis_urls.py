"""Small helpers to derive related Redis URLs (another logical db, the Celery broker form)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def redis_db(url: str) -> int:
    """The logical database ``url`` names, as redis-py reads it (``?db=`` before the path)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    path = "" if parts.scheme == "unix" else parts.path.strip("/")
    raw = query.get("db") or path or "0"
    if not raw.isdigit():
        raise ValueError(f"not a Redis database number: {raw!r} in {parts.scheme}:// URL")
    return int(raw)


def with_redis_db(url: str, db: int) -> str:
    """Return ``url`` pointing at logical database ``db``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme == "unix":
        query["db"] = str(db)
        # urlunsplit would drop the empty authority and write 'unix:/path'.
        return f"unix://{parts.path}?{urlencode(query)}"
    query.pop("db", None)  # it would win over the path
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


def app_url_for(url: str) -> str:
    """App data (registry, locks, events, throttles) lives in the database after the broker's,
    so deployments sharing a Redis on different databases share neither."""
    return with_redis_db(url, redis_db(url) + 1)


def broker_url_for(url: str) -> str:
    """Kombu spells a unix-socket Redis ``redis+socket://``; TCP URLs are used as they are."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = dict(parse_qsl(parts.query))
    db = query.pop("db", "0")
    return f"redis+socket://{parts.path}?virtual_host={db}"
