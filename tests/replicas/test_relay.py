"""The Celery relay's requests (INTEROP_REDIS_URL): a replica asks the workers to drain an
outbox consumer when changes are pending and nobody drains it, once per request on its way,
so a backlog on the queue is not flooded; a request lost (its worker died) is asked again a
lease later. Real Redis, real database."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from ci_support import unavailable

from fhir_server.store.work import Leases
from interop.outbox_relay import QUEUE, Relay
from interop.outbox_runner import OutboxRunner

REDIS_URL = os.environ.get("INTEROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    url = REDIS_URL.rsplit("/", 1)[0] + "/10"  # a database of its own: the queue names are fixed
    found = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        found.flushdb()
    except redis.RedisError as exc:
        unavailable(f"Redis unreachable at {url}: {exc}")
    yield found
    found.flushdb()
    found.close()


def _create(client: Any) -> None:
    assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201


def test_a_replica_asks_once_while_its_request_is_on_its_way(
    client: Any, app: Any, broker: redis.Redis
) -> None:
    engine = app.state.store.engine
    runner = OutboxRunner(engine, lease_seconds=1)
    runner.register("hook", lambda change: None)
    consumer = runner.consumers["hook"]
    kwargs = broker.connection_pool.connection_kwargs
    url = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"
    relay = Relay(Celery("relay-test", broker=url))
    relay.install(runner)

    relay.request(consumer)
    assert broker.llen(QUEUE) == 0  # nothing pending: nothing asked
    _create(client)
    for _ in range(5):
        relay.request(consumer)
    assert broker.llen(QUEUE) == 1  # one request, however often the commits wake it

    worker = Leases(engine)  # a worker takes the consumer's lease: it drains
    assert worker.acquire("outbox:hook", 5)
    _create(client)
    relay.request(consumer)
    assert broker.llen(QUEUE) == 1  # it looks again before it lets go
    worker.release("outbox:hook")  # let go with a change pending (committed meanwhile)
    relay.request(consumer)
    assert broker.llen(QUEUE) == 2  # a worker took the last request up: a new one
    relay.request(consumer)
    assert broker.llen(QUEUE) == 2

    time.sleep(1.1)  # nobody took the request up within a lease (its worker died): again
    relay.request(consumer)
    assert broker.llen(QUEUE) == 3
