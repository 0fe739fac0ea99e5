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


def test_a_broker_that_never_answers_does_not_hold_the_start(settings, caplog):
    """A broker that accepts connections and never answers: the web process still starts."""
    import signal
    import socket

    from carsite.celery import app
    from carsite.wsgi import warm_up

    class Hung(BaseException):  # not an Exception: warm_up's own handler must not swallow it
        pass

    def hung(signum, frame):
        raise Hung("warm_up still waiting on the broker after 30 s")

    server = socket.create_server(("127.0.0.1", 0))  # listens, so connections succeed; never accepts or answers
    saved_url = app.conf.broker_url
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    app.conf.broker_url = settings.CELERY_BROKER_URL
    app._pool, app.amqp._producer_pool = None, None
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with caplog.at_level(logging.WARNING, logger="carsite.wsgi"):
            warm_up()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        server.close()
        app.conf.broker_url = saved_url
        app._pool, app.amqp._producer_pool = None, None

    assert "could not reach the Celery broker" in caplog.text
