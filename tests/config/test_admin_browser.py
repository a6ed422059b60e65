"""The admin in a real browser: an operator logs in through the form and opens every list,
one change page per model with rows, and the operator overview, with no error status, no
server error and no JavaScript error on the way.

Needs a Chromium binary (Debian's ``chromium``, which ``make sandbox-tools`` installs when it
can) and the ``playwright`` package (the dev extras); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse

# Offline and quiet: no sandbox (tests may run as root), no GPU, no calls home.
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(settings.VAR_DIR) / "screenshots" / "admin-overview.png"


def _browser_binary() -> str | None:
    candidates = [
        os.environ.get("CHROMIUM_PATH"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _admin_paths() -> list[str]:
    """Every model's list, and the change page of its first row where it has one."""
    paths = [reverse("admin:index")]
    for model in sorted(admin.site._registry, key=lambda m: m._meta.label):
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        paths.append(reverse(f"{name}_changelist"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            paths.append(reverse(f"{name}_change", args=[quote(first.pk)]))
    return paths


@contextmanager
def _browser(profile: Path) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page on a fresh profile, and the list of problems it met (error statuses,
    console errors, uncaught exceptions), filled in as it browses."""
    binary = _browser_binary()
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set CHROMIUM_PATH)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=binary, headless=True, args=BROWSER_ARGS
        )
        try:
            page = context.new_page()
            yield page, _watch(page)
        finally:
            context.close()


def _watch(page: Any) -> list[str]:
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"console error on {page.url}: {message.text}")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} for {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught on {page.url}: {error}"))
    page.on("response", on_response)
    # Browsers ask for a favicon the admin does not have: not the admin's error.
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204, body=""))
    return problems


def _log_in(page: Any, base: str) -> None:
    page.goto(f"{base}{reverse('admin:login')}?next={reverse('admin:index')}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")  # pytest-django's admin_user
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{reverse('admin:index')}")


def _open(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, (url, response and response.status)
    assert "e=1" not in page.url, f"{url}: the list refused its filters"
    assert "Server Error" not in page.title(), url


@pytest.mark.django_db(transaction=True)
def test_an_operator_browses_the_whole_admin_without_an_error(live_server, everything, tmp_path):
    # given a row of every model and a superuser (the rows are read before the browser starts)
    paths = _admin_paths()
    overview = reverse("admin-overview")

    with _browser(tmp_path / "profile") as (page, problems):
        # when the operator logs in through the form and opens every page
        _log_in(page, live_server.url)
        for path in paths:
            _open(page, f"{live_server.url}{path}")
        _open(page, f"{live_server.url}{overview}")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        headline = page.inner_text("#content-main")

    # then no page, asset or script failed
    assert problems == []
    # and the overview shows the day's failure, the rejection and the pause with their reasons
    assert "division by zero" in headline
    assert "Account has insufficient <BTC>" in headline
    assert "maximum drawdown 12.3 % reached" in headline
