"""The strategy admin changes strategies through strategies.services only."""

from __future__ import annotations

import pytest

from strategies.models import Strategy, StrategyExecution, StrategyVersion
from subscriptions.models import StrategySubscription
from tests.api.helpers import (
    VALID_CODE,
    admin_form_data,
    admin_url,
    is_registered,
    make_execution,
)
from tests.factories import StrategyFactory, subscribe


@pytest.fixture
def followed(django_capture_on_commit_callbacks):
    """A strategy with two active subscribers, so it is in the registry."""
    strategy = StrategyFactory(settings={"fast": 5})
    with django_capture_on_commit_callbacks(execute=True):
        subscribe(strategy)
        subscribe(strategy)
    assert is_registered(strategy)
    return strategy


@pytest.mark.django_db
def test_retire_action_pauses_subscribers_and_unregisters(
    admin_client, followed, django_capture_on_commit_callbacks
):
    # when an operator retires the strategy from the list
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            admin_url(Strategy, "changelist"),
            {"action": "retire_strategies", "_selected_action": [followed.pk]},
            follow=True,
        )
    # then, as the service does it: retired, subscribers paused, count 0, off the registry
    assert response.status_code == 200
    assert "1 retired." in response.content.decode()
    followed.refresh_from_db()
    assert followed.status == "retired" and followed.subscriber_count == 0
    assert set(followed.subscriptions.values_list("status", "status_reason")) == {
        ("paused", "strategy retired")
    }
    assert not is_registered(followed)


@pytest.mark.django_db
def test_retiring_a_retired_strategy_does_nothing(admin_client, followed):
    from subscriptions.services import strategy_retire

    strategy_retire(strategy=followed)
    admin_client.post(
        admin_url(Strategy, "changelist"),
        {"action": "retire_strategies", "_selected_action": [followed.pk]},
    )
    followed.refresh_from_db()
    assert followed.status == "retired"


@pytest.mark.worker
@pytest.mark.django_db
def test_settings_edited_in_the_admin_are_versioned_like_the_api_does(
    admin_client, followed, django_capture_on_commit_callbacks, dry_runs_on_worker
):
    url = admin_url(Strategy, "change", followed.pk)
    page = admin_client.get(url)
    with django_capture_on_commit_callbacks() as scheduled:
        response = admin_client.post(
            url, admin_form_data(page, settings='{"fast": 9}', name="renamed")
        )
    assert response.status_code == 302, response.content
    followed.refresh_from_db()
    assert followed.settings == {"fast": 9} and followed.settings_version == 2
    assert followed.name == "renamed" and followed.code_version == 1
    assert len(scheduled) == 1  # the settings-changed event, published after the commit


@pytest.mark.worker
@pytest.mark.django_db
def test_settings_that_break_the_code_are_refused_in_the_admin_too(
    admin_client, followed, dry_runs_on_worker
):
    # when an operator gives the strategy settings with which its code returns no valid signal
    url = admin_url(Strategy, "change", followed.pk)
    data = admin_form_data(admin_client.get(url), settings='{"signal": "SIDEWAYS"}')
    response = admin_client.post(url, data)
    # then the form says why, and the settings stay as they were
    assert response.status_code == 200
    error = str(response.context["adminform"].form.errors["settings"])
    assert "dry run returned an invalid signal" in error
    followed.refresh_from_db()
    assert followed.settings == {"fast": 5} and followed.settings_version == 1


@pytest.mark.django_db
def test_code_is_shown_but_belongs_to_its_author(admin_client, followed):
    url = admin_url(Strategy, "change", followed.pk)
    page = admin_client.get(url)
    assert "generate_signal" in page.content.decode()
    assert "code" not in page.context["adminform"].form.fields
    admin_client.post(url, admin_form_data(page, code=VALID_CODE))
    followed.refresh_from_db()
    assert followed.code != VALID_CODE and followed.code_version == 1


@pytest.mark.django_db
def test_settings_must_be_an_object(admin_client, followed):
    url = admin_url(Strategy, "change", followed.pk)
    response = admin_client.post(url, admin_form_data(admin_client.get(url), settings="[1, 2]"))
    assert response.status_code == 200
    assert "JSON object" in str(response.context["adminform"].form.errors["settings"])
    followed.refresh_from_db()
    assert followed.settings == {"fast": 5} and followed.settings_version == 1


@pytest.mark.django_db
def test_status_and_counters_cannot_be_edited_by_hand(admin_client, followed):
    url = admin_url(Strategy, "change", followed.pk)
    page = admin_client.get(url)
    data = admin_form_data(page, status="retired", subscriber_count=99, settings_version=7)
    assert admin_client.post(url, data).status_code == 302
    followed.refresh_from_db()
    assert (followed.status, followed.subscriber_count, followed.settings_version) == (
        "active",
        2,
        1,
    )


@pytest.mark.django_db
def test_strategy_page_shows_subscribers_and_recent_executions(admin_client, followed):
    for index in range(25):
        make_execution(
            followed,
            status="failed" if index == 24 else "success",
            error="boom!",
            signal={"signal": "LONG", "metadata": {"why": "sma-cross-marker"}},
        )
    response = admin_client.get(admin_url(Strategy, "change", followed.pk))
    assert response.status_code == 200
    inlines = {
        inline.formset.model: inline.formset for inline in response.context["inline_admin_formsets"]
    }
    assert len(inlines[StrategySubscription].forms) == 2
    executions = inlines[StrategyExecution].forms
    assert len(executions) == 10  # the latest ones only, one line each
    latest = StrategyExecution.objects.filter(strategy=followed).order_by("-interval_start")
    assert executions[0].instance == latest[0]
    page = response.content.decode()
    assert "boom!" in page and "850 ms" in page
    assert "sma-cross-marker" not in page  # no signal JSON in the inline
    assert "all its subscriptions" in page and "all its executions" in page


@pytest.mark.django_db
def test_strategies_are_deployed_and_retired_not_added_or_deleted(admin_client, followed):
    assert admin_client.get(admin_url(Strategy, "add")).status_code == 403
    assert admin_client.get(admin_url(Strategy, "delete", followed.pk)).status_code == 403
    assert admin_client.post(admin_url(StrategyVersion, "add")).status_code == 403
