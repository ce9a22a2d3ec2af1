"""The contract every connector passes: one suite, parametrised over the backends.

Adding a backend is one entry in BACKENDS: a function that, given the pytest request, returns a factory of
(unstarted) connectors attached to one shared cluster, plus its marks in BACKEND_MARKS.
"""

from __future__ import annotations

import asyncio
import os
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from meshkit.connectors import Connector, ConnectorError, Subscription
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.devbroker import DevBroker, free_port
from tests.support.eventually import eventually

ClusterFactory = Callable[[], Connector]


def _memory_cluster(request: pytest.FixtureRequest) -> ClusterFactory:
    broker = MemoryBroker()
    return lambda: MemoryConnector(broker=broker)


def _kafka_cluster(request: pytest.FixtureRequest) -> ClusterFactory:
    from meshkit.connectors.kafka import KafkaConnector

    # Looked up lazily so the broker only starts when a kafka case runs.
    broker: DevBroker = request.getfixturevalue("kafka_broker")
    return lambda: KafkaConnector({"bootstrap.servers": broker.bootstrap})


# A real Hazelcast member, when one is given: members cannot be installed here (no JVM server).
HAZELCAST_MEMBERS = os.environ.get("HAZELCAST_MEMBERS", "")
NO_HAZELCAST = (
    "no Hazelcast member: set HAZELCAST_MEMBERS=host:port "
    "(e.g. docker run -p 5701:5701 hazelcast/hazelcast) to run these"
)
HAZELCAST_MARKS = [pytest.mark.hazelcast, pytest.mark.skipif(not HAZELCAST_MEMBERS, reason=NO_HAZELCAST)]


def _hazelcast_cluster(request: pytest.FixtureRequest) -> ClusterFactory:
    from meshkit.connectors.hazelcast import HazelcastConnector

    settings = {
        "cluster_members": HAZELCAST_MEMBERS,
        "cluster_name": os.environ.get("HAZELCAST_CLUSTER_NAME", "dev"),
    }
    return lambda: HazelcastConnector(settings)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], ClusterFactory]] = {
    "none": _memory_cluster,
    "kafka": _kafka_cluster,
    "hazelcast": _hazelcast_cluster,
}
BACKEND_MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "kafka": [pytest.mark.kafka],
    "hazelcast": HAZELCAST_MARKS,
}

# Upper bound for anything that should happen at once.
BOUND = 15.0


class Mesh:
    """Started connectors on one cluster; all closed at teardown."""

    def __init__(self, backend: str, factory: ClusterFactory) -> None:
        self.backend = backend
        self._factory = factory
        self._connectors: list[Connector] = []

    async def connect(self) -> Connector:
        connector = self._factory()
        self._connectors.append(connector)
        await connector.start()
        return connector

    async def close(self) -> None:
        for connector in self._connectors:
            await connector.close()


class Collector:
    """An on_record handler that remembers what arrived."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, value: bytes) -> None:
        self.records.append(value)
        self._changed.set()

    async def wait(self, count: int, timeout: float = BOUND) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while len(self.records) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.records


def fresh_topic(label: str) -> str:
    return f"contract.{label}.{uuid.uuid4().hex[:12]}"


MARKER = b"marker: published after what must not arrive"


async def through(connector: Connector, topic: str, partition: int, got: Collector) -> None:
    """Publish a marker to the partition and wait until `got` has it: a partition keeps its order, so what was
    published to it before the marker has arrived by then, wherever it was going to arrive."""
    await connector.publish(topic, partition, MARKER)
    await eventually(
        lambda: MARKER in got.records, timeout=BOUND, what=f"the marker from {topic}[{partition}]"
    )


@pytest.fixture(params=[pytest.param(name, marks=BACKEND_MARKS.get(name, [])) for name in BACKENDS])
async def mesh(request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    backend: str = request.param
    m = Mesh(backend, BACKENDS[backend](request))
    yield m
    await m.close()


@pytest.fixture
async def connector(mesh: Mesh) -> Connector:
    return await mesh.connect()


async def test_protocol_and_identity(connector: Connector, mesh: Mesh) -> None:
    assert isinstance(connector, Connector)
    assert connector.name == mesh.backend
    assert connector.href


async def test_round_trip(connector: Connector) -> None:
    topic = fresh_topic("roundtrip")
    await connector.ensure_topic(topic, 2)
    got = Collector()
    sub = await connector.consume(topic, 0, got)
    assert isinstance(sub, Subscription)
    await connector.publish(topic, 0, b"hello")
    assert await got.wait(1) == [b"hello"]
    await sub.close()


async def test_order_within_partition(connector: Connector) -> None:
    topic = fresh_topic("order")
    await connector.ensure_topic(topic, 1)
    got = Collector()
    await connector.consume(topic, 0, got)
    expected = [f"record-{i:04d}".encode() for i in range(500)]
    for value in expected[:250]:
        await connector.publish(topic, 0, value)
    await asyncio.gather(*(connector.publish(topic, 0, value) for value in expected[250:]))
    assert await got.wait(500) == expected


async def test_isolation_between_partitions(connector: Connector) -> None:
    topic = fresh_topic("partitions")
    await connector.ensure_topic(topic, 2)
    zero, one = Collector(), Collector()
    await connector.consume(topic, 0, zero)
    await connector.consume(topic, 1, one)
    await connector.publish(topic, 1, b"for-one")
    await connector.publish(topic, 0, b"for-zero")
    await through(connector, topic, 0, zero)
    await through(connector, topic, 1, one)
    assert zero.records == [b"for-zero", MARKER]
    assert one.records == [b"for-one", MARKER]


async def test_isolation_between_topics(connector: Connector) -> None:
    first, second = fresh_topic("first"), fresh_topic("second")
    await connector.ensure_topic(first, 1)
    await connector.ensure_topic(second, 1)
    a, b = Collector(), Collector()
    await connector.consume(first, 0, a)
    await connector.consume(second, 0, b)
    await connector.publish(second, 0, b"to-second")
    await through(connector, first, 0, a)
    await through(connector, second, 0, b)
    assert a.records == [MARKER]
    assert b.records == [b"to-second", MARKER]


async def test_large_payload(connector: Connector) -> None:
    topic = fresh_topic("large")
    await connector.ensure_topic(topic, 1)
    got = Collector()
    await connector.consume(topic, 0, got)
    payload = os.urandom(1024 * 1024)
    await connector.publish(topic, 0, payload)
    assert await got.wait(1) == [payload]


async def test_oversized_record_is_refused(connector: Connector) -> None:
    topic = fresh_topic("oversized")
    await connector.ensure_topic(topic, 1)
    async with asyncio.timeout(BOUND):
        with pytest.raises(ConnectorError):
            await connector.publish(topic, 0, bytes(8 * 1024 * 1024))


async def test_consume_starts_at_the_end(connector: Connector) -> None:
    topic = fresh_topic("end")
    await connector.ensure_topic(topic, 1)
    # Sequential and concurrent publishes: Kafka clients batch the concurrent ones into one record batch.
    for i in range(5):
        await connector.publish(topic, 0, f"old-{i}".encode())
    await asyncio.gather(*(connector.publish(topic, 0, f"old-batch-{i}".encode()) for i in range(20)))
    got = Collector()
    await connector.consume(topic, 0, got)
    await connector.publish(topic, 0, b"new")
    await through(connector, topic, 0, got)  # an old record read again would come before it
    assert got.records == [b"new", MARKER]


async def test_ensure_topic_is_idempotent(connector: Connector) -> None:
    topic = fresh_topic("idempotent")
    await connector.ensure_topic(topic, 3)
    await connector.ensure_topic(topic, 3)
    assert (await connector.list_topics())[topic] == 3
    # An existing topic is left as it is.
    await connector.ensure_topic(topic, 5)
    assert (await connector.list_topics())[topic] == 3


async def test_topics_are_visible_to_another_connector(connector: Connector, mesh: Mesh) -> None:
    topic = fresh_topic("shared")
    await connector.ensure_topic(topic, 4)
    peer = await mesh.connect()
    assert (await peer.list_topics())[topic] == 4
    got = Collector()
    await peer.consume(topic, 3, got)
    await connector.publish(topic, 3, b"across")
    assert await got.wait(1) == [b"across"]


async def test_publish_to_missing_topic_raises(connector: Connector) -> None:
    topic = fresh_topic("missing")
    async with asyncio.timeout(BOUND):
        with pytest.raises(ConnectorError, match="does not exist"):
            await connector.publish(topic, 0, b"lost")
    # Refused, not created on the fly.
    assert topic not in await connector.list_topics()


async def test_publish_to_partition_out_of_range_raises(connector: Connector) -> None:
    topic = fresh_topic("range")
    await connector.ensure_topic(topic, 2)
    async with asyncio.timeout(BOUND):
        for partition in (2, 99, -1):
            with pytest.raises(ConnectorError, match="out of range"):
                await connector.publish(topic, partition, b"lost")


async def test_consume_missing_topic_or_partition_raises(connector: Connector) -> None:
    topic = fresh_topic("consume-missing")
    async with asyncio.timeout(BOUND):
        with pytest.raises(ConnectorError):
            await connector.consume(topic, 0, Collector())
        await connector.ensure_topic(topic, 1)
        with pytest.raises(ConnectorError):
            await connector.consume(topic, 1, Collector())


async def test_subscription_close_stops_delivery(connector: Connector) -> None:
    topic = fresh_topic("unsubscribe")
    await connector.ensure_topic(topic, 1)
    got, other = Collector(), Collector()
    sub = await connector.consume(topic, 0, got)
    await connector.consume(topic, 0, other)
    await connector.publish(topic, 0, b"before")
    await got.wait(1)
    await sub.close()
    await sub.close()
    await connector.publish(topic, 0, b"after")
    # a closed subscription takes no marker; the open one's is the barrier (strictly ordered in memory only)
    await through(connector, topic, 0, other)
    assert got.records == [b"before"]
    assert other.records == [b"before", b"after", MARKER]


async def test_handler_error_does_not_stop_delivery(connector: Connector) -> None:
    topic = fresh_topic("handler-error")
    await connector.ensure_topic(topic, 1)
    got = Collector()

    def fragile(value: bytes) -> None:
        got(value)
        if value == b"boom":
            raise ValueError("handler bug")

    await connector.consume(topic, 0, fragile)
    await connector.publish(topic, 0, b"boom")
    await connector.publish(topic, 0, b"fine")
    assert await got.wait(2) == [b"boom", b"fine"]


async def test_delivery_is_never_reentrant_into_the_publisher(connector: Connector) -> None:
    topic = fresh_topic("reentrant")
    await connector.ensure_topic(topic, 1)
    stacks: list[list[str]] = []
    got = Collector()

    def on_record(value: bytes) -> None:
        stacks.append([frame.name for frame in traceback.extract_stack()])
        got(value)

    await connector.consume(topic, 0, on_record)
    await connector.publish(topic, 0, b"one")
    await got.wait(1)
    assert all("publish" not in names for names in stacks)


def _worker_threads() -> set[threading.Thread]:
    # The default executor's pooled threads (asyncio.to_thread) outlive any one client by design.
    return {t for t in threading.enumerate() if t.is_alive() and not t.name.startswith("asyncio_")}


async def test_close_stops_delivery_idempotent_and_leaves_no_threads(mesh: Mesh) -> None:
    publisher = await mesh.connect()
    topic = fresh_topic("close")
    await publisher.ensure_topic(topic, 2)
    witness = Collector()
    await publisher.consume(topic, 0, witness)
    before = _worker_threads()
    subject = await mesh.connect()
    got = Collector()
    await subject.consume(topic, 0, got)
    await subject.consume(topic, 1, Collector())
    await publisher.publish(topic, 0, b"before")
    await got.wait(1)
    await subject.close()
    await subject.close()
    assert _worker_threads() - before == set()
    await publisher.publish(topic, 0, b"after")
    # a closed connector takes no marker; another consumer's is the barrier (and no thread is left to deliver)
    await through(publisher, topic, 0, witness)
    assert witness.records == [b"before", b"after", MARKER]
    assert got.records == [b"before"]
    with pytest.raises(ConnectorError):
        await subject.publish(topic, 0, b"closed")


async def test_many_concurrent_publishes_are_all_delivered(connector: Connector) -> None:
    topic = fresh_topic("concurrent")
    await connector.ensure_topic(topic, 2)
    got = Collector()
    await connector.consume(topic, 1, got)
    values = [f"concurrent-{i}".encode() for i in range(2000)]
    async with asyncio.timeout(BOUND * 2):
        await asyncio.gather(*(connector.publish(topic, 1, value) for value in values))
    await got.wait(2000, timeout=BOUND * 2)
    assert len(got.records) == 2000
    assert set(got.records) == set(values)


# Kafka only: behaviour that has no in-memory counterpart.


@pytest.mark.kafka
async def test_kafka_start_against_closed_port_raises() -> None:
    from meshkit.connectors.kafka import KafkaConnector

    connector = KafkaConnector({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, connect_timeout=2.0)
    with pytest.raises(ConnectorError, match=r"cannot reach Kafka at 127\.0\.0\.1:"):
        async with asyncio.timeout(8):  # past the bound: a TimeoutError, not this ConnectorError
            await connector.start()
    await connector.close()


@pytest.mark.kafka
async def test_kafka_publish_fails_when_broker_goes_away(fresh_kafka_broker: DevBroker) -> None:
    from meshkit.connectors.kafka import KafkaConnector

    settings = {"bootstrap.servers": fresh_kafka_broker.bootstrap, "message.timeout.ms": "2000"}
    connector = KafkaConnector(settings)
    await connector.start()
    topic = fresh_topic("gone")
    await connector.ensure_topic(topic, 1)
    await connector.publish(topic, 0, b"while-up")
    fresh_kafka_broker.stop()
    async with asyncio.timeout(BOUND):
        with pytest.raises(ConnectorError):
            await connector.publish(topic, 0, b"while-down")
        await connector.close()


async def test_memory_default_broker_is_shared_in_the_process() -> None:
    first, second = MemoryConnector(), MemoryConnector()
    assert first.broker is second.broker is MemoryBroker.default()
    await first.start()
    await second.start()
    topic = fresh_topic("default-broker")
    await first.ensure_topic(topic, 1)
    got = Collector()
    await second.consume(topic, 0, got)
    await first.publish(topic, 0, b"shared")
    assert await got.wait(1) == [b"shared"]
    await first.close()
    await second.close()


def test_kafka_settings_pass_through_and_defaults() -> None:
    pytest.importorskip("confluent_kafka")
    from meshkit.connectors.kafka import consumer_config, producer_config

    user = {"bootstrap.servers": "b:9093", "security.protocol": "SASL_SSL", "queue.buffering.max.ms": "5"}
    producer = producer_config(user)
    assert producer["security.protocol"] == "SASL_SSL"
    assert producer["queue.buffering.max.ms"] == "5"
    assert "linger.ms" not in producer
    assert producer["acks"] == "1"
    consumer = consumer_config({**user, "fetch.wait.max.ms": "10"})
    assert consumer["fetch.wait.max.ms"] == "10"
    assert consumer["enable.auto.commit"] == "false"
    assert consumer["group.id"].startswith("meshkit-")
    assert "queue.buffering.max.ms" not in consumer
