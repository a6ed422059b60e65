from typing import cast

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import (
    DEV_CREDENTIALS_ENCRYPTION_KEY,
    DEV_SECRET_KEY,
    LOGGING,
    NUM_PROXIES,
    env,
)

# Secrets published in the repository (the development default, the compose file's old
# default; Django's startproject keys start with django-insecure-) must not sign anything.
PUBLISHED_SECRET_KEYS = {DEV_SECRET_KEY, "change-me-in-production"}
GENERATE_SECRET_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="").strip()
if not SECRET_KEY:
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is not set: set it to a secret of your own ({GENERATE_SECRET_KEY})"
    )
if SECRET_KEY in PUBLISHED_SECRET_KEYS or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is a published default: set it to a secret of your own "
        f"({GENERATE_SECRET_KEY})"
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
CREDENTIALS_ENCRYPTION_KEYS = env.list("CREDENTIALS_ENCRYPTION_KEYS")
if DEV_CREDENTIALS_ENCRYPTION_KEY in CREDENTIALS_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "CREDENTIALS_ENCRYPTION_KEYS holds the published development key: generate your own "
        "(see Credential keys in the README)"
    )
STRATEGY_SANDBOX_REQUIRE_ISOLATION = env.bool("STRATEGY_SANDBOX_REQUIRE_ISOLATION", default=True)
if NUM_PROXIES:
    # Only a trusted proxy may say the request came over HTTPS; without one a client could.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# One JSON object per log line, for the log collector (LOG_FORMAT=plain for text).
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
_handlers = cast(dict[str, dict[str, object]], LOGGING["handlers"])
_handlers["console"]["formatter"] = LOG_FORMAT
