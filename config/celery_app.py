import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("signalfan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _rebuild_registry(**_: object) -> None:
    # The registry lives in Redis, which may have restarted empty: the database is the truth.
    from strategies.services import registry_rebuild

    registry_rebuild()
