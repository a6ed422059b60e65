from config.settings.base import *  # noqa: F403
from config.settings.base import NUM_PROXIES, env

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
CREDENTIALS_ENCRYPTION_KEYS = env.list("CREDENTIALS_ENCRYPTION_KEYS")
STRATEGY_SANDBOX_REQUIRE_ISOLATION = env.bool("STRATEGY_SANDBOX_REQUIRE_ISOLATION", default=True)
if NUM_PROXIES:
    # Only a trusted proxy may say the request came over HTTPS; without one a client could.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
