"""Shared pytest fixtures.

Kafka
-----
``kafka_broker``
    session-scoped :class:`connectors.broker.LocalBroker` (Tansu, memory storage, 127.0.0.1, free
    port), stopped by its PID at the end of the session.  If it cannot start, Kafka tests fail under
    CI (``CI=true``) and are skipped elsewhere.
``kafka_topic``
    factory ``kafka_topic(partitions=3) -> name`` creating uniquely named topics on that broker.
``kafka_group``
    factory for unique consumer-group ids; ``KAFKA_GROUP_SETTINGS`` holds the fast-rebalance settings.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Callable, Iterator

import pytest
from threadpoolctl import threadpool_limits

# Two cores: multi-threaded BLAS only oversubscribes them for this workload (and tiny calls such as
# solve_triangular stall for milliseconds). One thread, as the benchmarks use.
threadpool_limits(1)

#: Consumer-group settings for tests: rebalances take ~1 s instead of ~23 s.
KAFKA_GROUP_SETTINGS = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 400}


def _running_in_ci() -> bool:
    return os.environ.get("CI") == "true"


# ---------------------------------------------------------------------- Kafka
@pytest.fixture(scope="session")
def kafka_broker() -> Iterator["LocalBroker"]:  # noqa: F821
    """A started LocalBroker for the whole session (memory storage: a restart loses all topics)."""
    from connectors.base import ConnectorError
    from connectors.broker import LocalBroker

    broker = LocalBroker()
    try:
        broker.start()
    except ConnectorError as exc:
        reason = f"cannot start the local Kafka test broker: {exc}"
        if _running_in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture()
def kafka_topic(kafka_broker) -> Iterator[Callable[..., str]]:
    """Factory creating uniquely named topics: ``kafka_topic(partitions=3, prefix="t") -> name``.

    Topics are created through KafkaAdminClient (producing to an unknown topic would auto-create it
    with 4 partitions) and deleted afterwards if the broker still runs.
    """
    from kafka.admin import KafkaAdminClient, NewTopic

    created: list[str] = []
    counter = itertools.count()
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers, request_timeout_ms=10000)

    def make(partitions: int = 3, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}-{next(counter)}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    try:
        yield make
    finally:
        try:
            if kafka_broker.is_running and created:
                existing = set(admin.list_topics())
                gone = [t for t in created if t in existing]
                if gone:
                    admin.delete_topics(gone)
        except Exception:  # cleanup is best effort; a restarted broker has no topics anyway
            pass
        admin.close()


@pytest.fixture()
def kafka_group() -> Callable[[], str]:
    """Factory of unique consumer-group ids."""
    counter = itertools.count()
    prefix = uuid.uuid4().hex[:8]
    return lambda: f"g-{prefix}-{next(counter)}"
