"""Keeps django-celery-beat's crontab tasks in step with the active candle resolutions.

One periodic task per resolution (not per strategy): at each close it dispatches every
strategy registered on that resolution.
"""

from __future__ import annotations

import json

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from core.time_utils import CANONICAL_RESOLUTIONS, resolution_to_cron

# The pipeline's beat task, by name: beat rows hold the name, not an import.
TASK_NAME = "execution.tasks.candle_close"


def periodic_task_name(resolution: str) -> str:
    return f"candle-close {resolution}"


def _crontab_for(resolution: str) -> CrontabSchedule:
    cron = resolution_to_cron(resolution)
    schedule, _ = CrontabSchedule.objects.get_or_create(**cron, timezone="UTC")
    return schedule


@transaction.atomic
def schedule_sync(*, active_resolutions: set[str]) -> None:
    """Enable a candle-close task for each active resolution and disable the others."""
    for resolution in CANONICAL_RESOLUTIONS:
        enabled = resolution in active_resolutions
        name = periodic_task_name(resolution)
        if not enabled:
            if PeriodicTask.objects.filter(name=name, enabled=True).update(enabled=False):
                # A queryset update skips beat's change tracking; tell beat to reload.
                PeriodicTasks.update_changed()
            continue
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": TASK_NAME,
                "crontab": _crontab_for(resolution),
                "kwargs": json.dumps({"resolution": resolution}),
                "enabled": True,
            },
        )
