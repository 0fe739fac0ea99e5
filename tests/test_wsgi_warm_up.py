"""The web process warms up at start, and a broker that is down then does not stop it from starting."""

from __future__ import annotations

import gc
import logging


def test_warm_up_loads_the_urlconf_and_binds_the_tasks():
    from carsite.celery import app
    from carsite.wsgi import warm_up

    gc.unfreeze()
    warm_up()

    assert app.finalized
    assert "classifier.classify" in app.tasks
    assert gc.get_freeze_count() > 0  # what start-up loaded is left out of the collector's full passes


def test_an_unreachable_broker_is_reported_not_raised(settings, monkeypatch, caplog):
    from carsite.celery import app
    from carsite.wsgi import warm_up

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("connection refused")

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    monkeypatch.setattr(app, "producer_or_acquire", refuse)
    with caplog.at_level(logging.WARNING, logger="carsite.wsgi"):
        warm_up()

    assert "could not reach the Celery broker" in caplog.text

