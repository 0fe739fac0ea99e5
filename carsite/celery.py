"""Celery application: autodiscovers ``tasks.py`` in every installed app."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "carsite.settings")

app = Celery("carsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
