"""Settings the type checker's Django plugin loads: it reads models and settings, connects to
nothing, so it must not start the embedded Redis (mypy exits without running exit handlers, and
a server it started would outlive it)."""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

from config.settings.test import *  # noqa: F403
