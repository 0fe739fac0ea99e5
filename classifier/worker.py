"""Celery worker hooks: load and warm up the active models when a worker starts.

With the prefork pool the models are loaded in each child (``worker_process_init``), never in the
parent: torch's thread pools do not survive a fork, and each child needs its own copy anyway.
Pools that do not fork (solo, threads) start loading them in a background thread as soon as the
worker is set up, so loading the models overlaps Celery's own start (connecting to the broker, and
about a second listening for other workers unless started ``--without-mingle``); the worker starts
consuming once they are loaded.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_ready

logger = logging.getLogger(__name__)

_warming_up: threading.Thread | None = None


def _uses_forking_pool(instance: Any) -> bool:
    pool = getattr(instance, "pool_cls", None)
    name = pool if isinstance(pool, str) else f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
    return "prefork" in name.lower()


def _warm_up_in_background() -> None:
    from django.db import connection

    from classifier.runtime import warm_up_active_models

    try:
        warm_up_active_models()
    finally:
        connection.close()  # this thread's own connection: nothing else will use it


@celeryd_after_setup.connect
def _start_warm_up_unless_forking(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    global _warming_up
    if not _uses_forking_pool(instance) and _warming_up is None:
        _warming_up = threading.Thread(target=_warm_up_in_background, name="carsite-warm-up", daemon=True)
        _warming_up.start()


@worker_process_init.connect
def _warm_up_in_child(**kwargs: Any) -> None:
    from django.db import close_old_connections

    from classifier.runtime import warm_up_active_models

    close_old_connections()
    warm_up_active_models()


@worker_ready.connect
def _warm_up_when_ready(**kwargs: Any) -> None:
    """Consume only once the models are loaded: wait for the warm-up begun at setup (none with prefork:
    the children warm up themselves)."""
    global _warming_up
    if _warming_up is not None:
        _warming_up.join()
        _warming_up = None
