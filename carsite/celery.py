"""Celery application: autodiscovers ``tasks.py`` in every installed app."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "carsite.settings")
# A worker starting up would otherwise run Django's system checks, which import every URLconf, view and API
# module it never serves and delay its first job. The test script runs `manage.py check`, and every deploy
# runs them with `manage.py migrate`.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

app = Celery("carsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _drop_stale_database_connections(task: Any = None, **kwargs: Any) -> None:
    """What Django does at the start of each request: close a connection that failed or outlived CONN_MAX_AGE.

    Celery's own per-task close is turned off (CELERY_DB_REUSE_MAX) so healthy connections are reused.
    Skipped for tasks run in-process (no broker): they run inside the caller's request or transaction.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
