"""Small helpers to derive related Redis URLs (another logical db, the Celery broker form)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def with_redis_db(url: str, db: int) -> str:
    """Return ``url`` pointing at logical database ``db``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        # urlunsplit would drop the empty authority and write 'unix:/path'.
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def broker_url_for(url: str) -> str:
    """Kombu spells a unix-socket Redis ``redis+socket://``; TCP URLs are used as they are."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = dict(parse_qsl(parts.query))
    db = query.pop("db", "0")
    return f"redis+socket://{parts.path}?virtual_host={db}"
