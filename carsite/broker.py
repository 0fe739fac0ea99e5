"""Celery's Redis transport, with one Redis client per channel instead of one per operation.

kombu's Redis channel builds a new redis-py client for every publish and every acknowledgement, and
each new client copies redis-py's table of response callbacks (about 170 entries, each key
upper-cased): measured here, about a quarter of the worker's CPU per task message. A redis-py client
is safe to share between threads (every command takes a connection from the pool and gives it back),
so one per channel, rebuilt when the channel replaces its connection pool, does the same work.
Selected by ``CELERY_BROKER_TRANSPORT`` for redis:// and rediss:// broker URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel
