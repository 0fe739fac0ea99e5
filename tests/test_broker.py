"""The Redis transport the workers use: kombu's, sharing one client per channel."""

import os
import subprocess
import sys
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from tests.conftest import REPO_ROOT

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def connection():
    with Connection(REDIS_URL, transport="carsite.broker:Transport") as conn:
        yield conn


def test_channel_shares_one_client_until_it_replaces_its_connection_pool(connection):
    channel = connection.channel()
    try:
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        given = object()
        with channel.conn_or_acquire(given) as passed:
            assert passed is given
        channel._disconnect_pools()  # what kombu does when the connection to Redis is lost
        with channel.conn_or_acquire() as rebuilt:
            assert rebuilt is not first
            assert rebuilt.connection_pool is channel.pool
    finally:
        channel.close()


def test_messages_go_round_trip_and_an_acknowledged_one_is_gone(connection):
    name = f"carsite-test-{uuid.uuid4().hex}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key="t")
    bound = queue(connection.default_channel)
    bound.declare()
    try:
        producer = connection.Producer(serializer="json")
        for number in range(3):
            producer.publish({"n": number}, exchange=queue.exchange, routing_key="t", declare=[queue])
        received = []
        for _ in range(3):
            message = bound.get(no_ack=False)
            received.append(message.payload["n"])
            message.ack()
        assert received == [0, 1, 2]
        assert bound.get(no_ack=False) is None
        # Nothing of ours left in kombu's bookkeeping of unacknowledged messages either.
        unacked = connection.default_channel.client.hvals("unacked")
        assert not [value for value in unacked if name.encode() in value]
    finally:
        bound.delete()


@pytest.mark.parametrize(
    ("broker_url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "carsite.broker:Transport"),
        ("rediss://127.0.0.1:6379/0", "carsite.broker:Transport"),
        ("amqp://guest@127.0.0.1//", "None"),
        ("", "None"),
    ],
)
def test_the_transport_is_chosen_for_redis_brokers_only(broker_url, expected):
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='carsite.settings'; django.setup();"
        "from carsite.celery import app; print(app.conf.broker_transport)"
    )
    env = {**os.environ, "DEBUG": "1", "CELERY_BROKER_URL": broker_url}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == expected
