"""Celery worker hooks: load and warm up the active models when a worker starts.

With the prefork pool the models are loaded in each child (``worker_process_init``), never in the
parent: torch's thread pools do not survive a fork, and each child needs its own copy anyway.
Pools that do not fork (solo, threads) load them once the worker is ready.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_ready

logger = logging.getLogger(__name__)

_pool_forks = True


def _uses_forking_pool(instance: Any) -> bool:
    pool = getattr(instance, "pool_cls", None)
    name = pool if isinstance(pool, str) else f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
    return "prefork" in name.lower()


@celeryd_after_setup.connect
def _remember_pool_kind(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    global _pool_forks
    _pool_forks = _uses_forking_pool(instance)


@worker_process_init.connect
def _warm_up_in_child(**kwargs: Any) -> None:
    from django.db import close_old_connections

    from classifier.runtime import warm_up_active_models

    close_old_connections()
    warm_up_active_models()


@worker_ready.connect
def _warm_up_when_ready(**kwargs: Any) -> None:
    if _pool_forks:
        return  # the children warm up themselves
    from classifier.runtime import warm_up_active_models

    warm_up_active_models()
