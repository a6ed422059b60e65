"""Settings and deployment files that could surprise: secrets, bindings, Redis databases.

Settings modules are imported in a fresh interpreter with the environment under test, as a
process of the platform would import them.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings as django_settings
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from config.redis_urls import app_url_for, broker_url_for, redis_db, with_redis_db

BASE_DIR = Path(django_settings.BASE_DIR)
GOOD_SECRET = "k3Jv9-Qz0pX_7sLm2WnB4yT8rE1uI6oA5dF0gH3jK9lZ2xC7vB4nM1qW8eR5tY"
GOOD_FERNET = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="
# A stand-in service address: settings only read it (no connection is made at import).
REDIS = "redis://127.0.0.1:6379/0"
SETTINGS_OF = """
import json, importlib, sys
try:
    module = importlib.import_module(sys.argv[1])
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({name: getattr(module, name, None) for name in sys.argv[2:]}, default=str))
"""


def settings_of(module: str, environment: dict[str, str], *names: str) -> dict[str, Any]:
    """``names`` of settings ``module`` imported with only ``environment`` (or the error)."""
    env = {"PATH": os.environ["PATH"], "REDIS_URL": REDIS, **environment}
    done = subprocess.run(
        [sys.executable, "-c", SETTINGS_OF, module, *names],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def production(**environment: str) -> dict[str, str]:
    return {
        "DJANGO_SECRET_KEY": GOOD_SECRET,
        "DJANGO_ALLOWED_HOSTS": "example.com",
        "CREDENTIALS_ENCRYPTION_KEYS": GOOD_FERNET,
        **environment,
    }


# --- secrets ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "secret", [None, "", "  ", "insecure-dev-only-key-change-me", "change-me-in-production"]
)
def test_production_refuses_to_start_without_a_secret_key_of_its_own(secret):
    # given a production environment with no secret key, or a published one
    environment = production()
    if secret is None:
        del environment["DJANGO_SECRET_KEY"]
    else:
        environment["DJANGO_SECRET_KEY"] = secret
    # when the settings load, then they refuse, saying which variable and how to make one
    loaded = settings_of("config.settings.production", environment, "SECRET_KEY")
    assert loaded["error"] == "ImproperlyConfigured"
    assert "DJANGO_SECRET_KEY" in loaded["message"] and "secrets" in loaded["message"]


def test_production_refuses_the_published_credentials_key():
    environment = production(CREDENTIALS_ENCRYPTION_KEYS=f"{GOOD_FERNET},{_dev_fernet_key()}")
    loaded = settings_of("config.settings.production", environment, "SECRET_KEY")
    assert loaded["error"] == "ImproperlyConfigured"
    assert "CREDENTIALS_ENCRYPTION_KEYS" in loaded["message"]


def _dev_fernet_key() -> str:
    return settings_of("config.settings.base", {}, "DEV_CREDENTIALS_ENCRYPTION_KEY")[
        "DEV_CREDENTIALS_ENCRYPTION_KEY"
    ]


def test_production_starts_with_secrets_of_its_own():
    names = ("SECRET_KEY", "DEBUG", "WEBHOOK_ALLOW_PRIVATE_ADDRESSES")
    loaded = settings_of("config.settings.production", production(), *names)
    # and webhooks may not reach loopback or private addresses (the operator's network)
    assert loaded == {
        "SECRET_KEY": GOOD_SECRET,
        "DEBUG": False,
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": False,
    }


@pytest.mark.parametrize(("proxies", "header"), [(None, None), ("1", ["HTTP_X_FORWARDED_PROTO"])])
def test_production_trusts_x_forwarded_proto_only_behind_a_proxy(proxies, header):
    environment = production(**({"NUM_PROXIES": proxies} if proxies else {}))
    loaded = settings_of("config.settings.production", environment, "SECURE_PROXY_SSL_HEADER")
    trusted = loaded["SECURE_PROXY_SSL_HEADER"]
    assert (trusted[:1] if trusted else None) == header


def test_a_negative_number_of_proxies_is_refused():
    loaded = settings_of("config.settings.local", {"NUM_PROXIES": "-1"}, "NUM_PROXIES")
    assert loaded["error"] == "ImproperlyConfigured" and "NUM_PROXIES" in loaded["message"]


# --- debug pages -----------------------------------------------------------------------------
def test_debug_pages_show_no_service_credentials(settings):
    # given DEBUG on, services with passwords in settings and in the process environment
    # (generated: the page quotes the source lines around the error, literals included)
    pw = [secrets.token_hex(8) for _ in range(5)]
    settings.DEBUG = True
    settings.REDIS_URL = f"redis://:{pw[0]}@cache:6379/0"
    settings.CELERY_BROKER_URL = f"redis://:{pw[1]}@cache:6379/0"
    settings.SOME_SERVICE = {"endpoint": f"https://bot:{pw[2]}@api.example.com/v1"}
    request = RequestFactory().get("/admin/", DATABASE_URL=f"postgres://app:{pw[3]}@db/signalfan")
    # when a request fails in code holding a connection URL in a local variable
    html = _debug_page(request, dsn=f"postgres://app:{pw[4]}@db/signalfan")
    # then the debug page names the settings and variables but shows none of the secrets
    assert "REDIS_URL" in html and "DATABASE_URL" in html and "SOME_SERVICE" in html
    assert [secret for secret in pw if secret in html] == []


def _debug_page(request: Any, *, dsn: str) -> str:
    """The debug page of an error raised here (this frame, with ``dsn``, is its traceback)."""
    try:
        raise RuntimeError(f"cannot connect to {dsn.split('@')[-1]}")
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info()).get_traceback_html()


# --- Redis databases -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "db", "app"),
    [
        ("redis://127.0.0.1:6379/0", 0, "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379/4", 4, "redis://127.0.0.1:6379/5"),
        ("redis://127.0.0.1:6379", 0, "redis://127.0.0.1:6379/1"),
        ("redis://:pw@127.0.0.1:6379/2?db=6", 6, "redis://:pw@127.0.0.1:6379/7"),
        ("unix:///tmp/redis.sock?db=3", 3, "unix:///tmp/redis.sock?db=4"),
        ("unix:///tmp/redis.sock", 0, "unix:///tmp/redis.sock?db=1"),
    ],
)
def test_app_data_lives_in_the_database_after_the_brokers(url, db, app):
    assert redis_db(url) == db
    assert app_url_for(url) == app
    assert redis_db(app) == db + 1


def test_with_redis_db_and_broker_urls_keep_their_forms():
    assert with_redis_db("redis://h:6379/1?db=1&ssl_cert_reqs=none", 3) == (
        "redis://h:6379/3?ssl_cert_reqs=none"
    )
    assert broker_url_for("unix:///tmp/r.sock?db=5") == "redis+socket:///tmp/r.sock?virtual_host=5"


@pytest.mark.parametrize(
    ("environment", "app", "broker"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:6379/4"}, "/5", "/4"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "/1", "/0"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/4", "REDIS_APP_URL": "redis://h/9"}, "/9", "/4"),
    ],
)
def test_the_app_database_follows_redis_url(environment, app, broker):
    loaded = settings_of("config.settings.local", environment, "REDIS_APP_URL", "CELERY_BROKER_URL")
    assert loaded["REDIS_APP_URL"].endswith(app)
    assert loaded["CELERY_BROKER_URL"].endswith(broker)


def test_a_redis_url_without_a_database_number_is_refused_clearly():
    loaded = settings_of("config.settings.local", {"REDIS_URL": "redis://h:6379/x"}, "REDIS_URL")
    assert loaded["error"] == "ImproperlyConfigured" and "REDIS_URL" in loaded["message"]


# --- binding ---------------------------------------------------------------------------------
def _procfile_web() -> str:
    lines = (BASE_DIR / "Procfile").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("web:"))


@pytest.mark.parametrize(
    ("environment", "address"), [({}, "127.0.0.1:8000"), ({"BIND": "0.0.0.0:8000"}, "0.0.0.0:8000")]
)
def test_the_dev_web_server_listens_on_loopback_unless_asked(environment, address):
    # given the Procfile's web command, as honcho's shell expands it
    env = {"PATH": os.environ["PATH"], **environment}
    words = subprocess.run(
        ["sh", "-c", f"printf '%s\\n' {_procfile_web()}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # then runserver gets that address
    assert words[-2:] == ["runserver", address]


@pytest.mark.parametrize(
    ("args", "address"), [([], "127.0.0.1:8000"), (["BIND=0.0.0.0:9"], "0.0.0.0:9")]
)
def test_make_run_passes_a_loopback_address_unless_asked(args, address):
    dry_run = subprocess.run(
        ["make", "-n", "run", *args], cwd=BASE_DIR, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    honcho = next(line for line in dry_run if "honcho start" in line)
    assert shlex.split(honcho)[0] == f"BIND={address}"


# --- docker compose --------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


def _seccomp_profile(service: dict[str, Any]) -> dict[str, Any]:
    options = dict(option.split("=", 1) for option in service["security_opt"] if "=" in option)
    return json.loads((BASE_DIR / options["seccomp"]).read_text())


def test_compose_gives_the_strategy_runner_what_bubblewrap_needs_and_no_more():
    # given the one service that runs strategy code (deploys are dry-run on workers too)
    service = _compose()["services"]["worker"]
    # then isolation is required, without privileges or added capabilities
    assert service["environment"]["STRATEGY_SANDBOX_REQUIRE_ISOLATION"] == "true"
    assert not service.get("privileged") and not service.get("cap_add")
    assert "no-new-privileges:true" in service["security_opt"]
    assert "seccomp=unconfined" not in service["security_opt"]
    # and a seccomp profile of the repository's own, allowing the namespace syscalls outright
    profile = _seccomp_profile(service)
    unconditional = {
        syscall
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not {"args", "includes", "excludes"} & set(rule)
        for syscall in rule["names"]
    }
    needed = {"clone", "unshare", "mount", "umount2", "pivot_root", "sethostname"}
    assert needed <= unconditional


@pytest.mark.parametrize("name", ["web", "notification-worker", "beat", "streamer"])
def test_services_that_run_no_strategy_code_keep_dockers_defaults(name):
    # given a service that never runs strategy code
    service = _compose()["services"][name]
    # then its security options are Docker's own
    assert "security_opt" not in service and not service.get("privileged")


def test_the_seccomp_profile_is_dockers_default_shape_and_denies_by_default():
    # given the worker's seccomp profile
    profile = _seccomp_profile(_compose()["services"]["worker"])
    # then it has the structure Docker loads, refusing what it does not list
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    architectures = {arch["architecture"] for arch in profile["archMap"]}
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= architectures
    keys = {"names", "action", "args", "includes", "excludes", "comment", "errnoRet"}
    for rule in profile["syscalls"]:
        assert rule["names"] and all(isinstance(name, str) for name in rule["names"])
        assert rule["action"] in {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"} and set(rule) <= keys
    # and what the sandbox does not need stays refused (allowed only with capabilities)
    unconditional = {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "includes" not in rule
        for name in rule["names"]
    }
    assert "read" in unconditional
    assert not {"setns", "bpf", "kexec_load", "init_module", "open_by_handle_at"} & unconditional


def test_compose_requires_secrets_and_defaults_none():
    environment = _compose()["x-app"]["environment"]
    for name in ("DJANGO_SECRET_KEY", "CREDENTIALS_ENCRYPTION_KEYS"):
        assert environment[name].startswith(f"${{{name}:?"), environment[name]


def test_compose_publishes_the_web_port_on_loopback_unless_asked():
    assert _compose()["services"]["web"]["ports"] == ["${BIND:-127.0.0.1:8000}:8000"]
