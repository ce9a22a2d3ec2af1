"""The Hazelcast connector's own logic, without a member: naming, settings, metadata encoding, serialisation
of records, the listener-to-loop hand-over, ordered publishing, the size limit and a bounded failed start.

What needs a real member (records through the cluster) is in tests/connectors/test_connector_contract.py and
tests/mesh/test_mesh_contract.py, which run when HAZELCAST_MEMBERS=host:port is set.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import threading
import time
from typing import Any

import pytest

# First: the connector imports the client without the asyncore deprecation warning it raises on Python 3.11.
from meshkit.connectors.hazelcast import (
    CLIENT_DEFAULTS,
    MAX_RECORD_BYTES,
    METADATA_MAP,
    HazelcastConnector,
    HazelcastSubscription,
    PartitionListener,
    client_config,
    decode_topic,
    encode_topic,
    hazelcast_settings,
    partition_topic,
    ringbuffer_name,
    split_partition_topic,
)

# isort: split
from hazelcast.config import Config, IntType, ReconnectMode, SSLProtocol
from hazelcast.core import HazelcastJsonValue
from hazelcast.errors import HazelcastSerializationError
from hazelcast.future import Future as HzFuture
from hazelcast.proxy.base import TopicMessage
from hazelcast.serialization import SerializationServiceV1
from hazelcast.serialization.serialization_const import CONSTANT_TYPE_BYTE_ARRAY, PYTHON_TYPE_PICKLE

from meshkit import AppConfig, ConfigError
from meshkit.connectors import Connector, ConnectorError, make_connector
from meshkit.connectors.hazelcast._bridge import bridge
from meshkit.connectors.hazelcast._config import connect_timeout_of, read_batch_size_of
from meshkit.connectors.hazelcast._connector import refuse_pickles
from meshkit.connectors.hazelcast._publisher import OrderedPublisher
from meshkit.devbroker import free_port
from tests.support.eventually import eventually


def load(**properties: str) -> AppConfig:
    return AppConfig.load(argv=[], environ={}, overrides=properties)


# -- naming --------------------------------------------------------------------------------------------------


def test_a_partition_is_a_reliable_topic_named_like_the_java_original() -> None:
    assert partition_topic("multiplex.0001", 3) == "multiplex.0001.3"
    assert partition_topic("service.monitor", 0) == "service.monitor.0"
    assert partition_topic("multiplex.0009", 31) == "multiplex.0009.31"
    assert ringbuffer_name("multiplex.0001", 3) == "_hz_rb_multiplex.0001.3"
    assert METADATA_MAP == "meshkit.topics"


@pytest.mark.parametrize(("topic", "partition"), [("multiplex.0001", 3), ("service.monitor", 10), ("a", 0)])
def test_partition_topic_names_split_back(topic: str, partition: int) -> None:
    assert split_partition_topic(partition_topic(topic, partition)) == (topic, partition)


@pytest.mark.parametrize("name", ["multiplex", "multiplex.", ".3", "multiplex.x", "multiplex.-1", "a.٣"])
def test_names_that_are_not_a_partition_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        split_partition_topic(name)


def test_no_name_for_a_negative_partition_or_an_empty_topic() -> None:
    with pytest.raises(ValueError):
        partition_topic("multiplex.0001", -1)
    with pytest.raises(ValueError):
        partition_topic("", 0)


# -- settings ------------------------------------------------------------------------------------------------


def test_settings_default_to_a_local_member_of_cluster_dev() -> None:
    assert hazelcast_settings(load()) == {"cluster_members": "127.0.0.1:5701", "cluster_name": "dev"}


def test_settings_read_members_cluster_name_and_pass_client_options_through() -> None:
    settings = hazelcast_settings(
        load(
            **{
                "hazelcast.cluster.members": "10.0.0.1:5701, 10.0.0.2:5702",
                "hazelcast.cluster.name": "mesh",
                "hazelcast.invocation.timeout": "7.5",
                "hazelcast.ssl.enabled": "true",
                "hazelcast.ssl-cafile": "/etc/ca.pem",
                "hazelcast.creds_username": "mesh-user",
                "hazelcast.smart_routing": "off",
                "cloud.connector": "hazelcast",
                "bootstrap.servers": "ignored:9092",
            }
        )
    )
    assert settings == {
        "cluster_members": "10.0.0.1:5701, 10.0.0.2:5702",
        "cluster_name": "mesh",
        "invocation_timeout": "7.5",
        "ssl_enabled": "true",
        "ssl_cafile": "/etc/ca.pem",
        "creds_username": "mesh-user",
        "smart_routing": "off",
    }
    config = client_config(settings)
    assert config.cluster_members == ["10.0.0.1:5701", "10.0.0.2:5702"]
    assert config.cluster_name == "mesh"
    assert config.invocation_timeout == 7.5
    assert config.ssl_enabled is True
    assert config.ssl_cafile == "/etc/ca.pem"
    assert config.creds_username == "mesh-user"
    assert config.smart_routing is False


def test_environment_variables_name_members_and_cluster() -> None:
    config = AppConfig.load(
        argv=[], environ={"HAZELCAST_CLUSTER_MEMBERS": "hz:5701", "HAZELCAST_CLUSTER_NAME": "prod"}
    )
    assert hazelcast_settings(config) == {"cluster_members": "hz:5701", "cluster_name": "prod"}


def test_meshkit_defaults_apply_only_where_the_user_set_nothing() -> None:
    config = client_config({"cluster_members": "hz:5701"})
    assert config.invocation_timeout == float(CLIENT_DEFAULTS["invocation_timeout"]) == 30.0
    assert config.reconnect_mode == ReconnectMode.ON
    assert config.cluster_connect_timeout == Config().cluster_connect_timeout  # reconnection never gives up
    mine = client_config(
        {
            "invocation_timeout": "120",
            "reconnect_mode": "off",
            "default_int_type": "INT",
            "ssl_protocol": "TLSv1_3",
        }
    )
    assert mine.invocation_timeout == 120.0
    assert mine.reconnect_mode == ReconnectMode.OFF
    assert mine.default_int_type == IntType.INT
    assert mine.ssl_protocol == SSLProtocol.TLSv1_3
    assert client_config({"cluster_connect_timeout": "2.5"}).cluster_connect_timeout == 2.5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"no_such_option": "1"}, "hazelcast.no_such_option: not an option"),
        ({"async_start": "true"}, "set by meshkit"),
        ({"reliable_topics": "x"}, "set by meshkit"),
        ({"near_caches": "x"}, "takes objects"),
        ({"ssl_enabled": "maybe"}, "hazelcast.ssl_enabled='maybe'"),
        ({"invocation_timeout": "soon"}, "hazelcast.invocation_timeout='soon'"),
        ({"reconnect_mode": "ASYNC"}, "reconnect_mode=ASYNC"),
        ({"reconnect_mode": "sometimes"}, "hazelcast.reconnect_mode='sometimes'"),
        ({"read_batch_size": "5000"}, "read_batch_size"),
        ({"cluster_connect_timeout": "never"}, "cluster_connect_timeout"),
    ],
)
def test_bad_options_are_configuration_errors_naming_the_property(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        HazelcastConnector({"cluster_members": "hz:5701", **settings})


def test_connect_bound_and_read_batch_size_come_from_settings() -> None:
    assert connect_timeout_of({}) == 10.0
    assert connect_timeout_of({"cluster_connect_timeout": "-1"}) == 10.0
    assert connect_timeout_of({"cluster.connect.timeout": "3"}) == 3.0
    assert read_batch_size_of({}) == 64
    assert read_batch_size_of({"read.batch.size": "10"}) == 10
    # A connector option, not a client one: accepted, and not handed to the client's Config.
    client_config({"read_batch_size": "10"})


def test_make_connector_builds_the_hazelcast_connector_from_properties() -> None:
    config = load(
        **{
            "cloud.connector": "hazelcast",
            "hazelcast.cluster.members": "10.0.0.1:5701,10.0.0.2:5701",
            "hazelcast.cluster.name": "mesh",
        }
    )
    connector = make_connector(config)
    assert isinstance(connector, HazelcastConnector)
    assert isinstance(connector, Connector)
    assert connector.name == "hazelcast"
    assert connector.href == "10.0.0.1:5701,10.0.0.2:5701"
    assert connector.cluster_name == "mesh"


def test_make_connector_reports_bad_hazelcast_options_as_configuration_errors() -> None:
    config = load(**{"cloud.connector": "hazelcast", "hazelcast.ssl.enabled": "perhaps"})
    with pytest.raises(ConfigError, match=r"hazelcast\.ssl_enabled"):
        make_connector(config)


# -- topic metadata and record serialisation -----------------------------------------------------------------


def test_topic_metadata_is_a_json_value_with_the_partition_count() -> None:
    created = _dt.datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=_dt.UTC)
    value = encode_topic(32, created)
    assert isinstance(value, HazelcastJsonValue)
    assert json.loads(value.to_string()) == {"partitions": 32, "created": "2026-11-25T10:00:00.123Z"}
    assert decode_topic(value) == 32


def test_topic_metadata_survives_the_clients_serialisation() -> None:
    service = SerializationServiceV1(Config())
    stored = service.to_data(encode_topic(11))
    assert decode_topic(service.to_object(stored)) == 11


@pytest.mark.parametrize(
    ("value", "partitions"),
    [(7, 7), ("7", 7), ('{"partitions": 4}', 4), (HazelcastJsonValue('{"partitions": 2, "x": 1}'), 2)],
)
def test_metadata_written_by_hand_is_read_too(value: object, partitions: int) -> None:
    assert decode_topic(value) == partitions


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        True,
        None,
        "many",
        "{}",
        '{"partitions": "4"}',
        '{"partitions": 0}',
        [4],
        HazelcastJsonValue("[]"),
    ],
)
def test_metadata_without_a_partition_count_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        decode_topic(value)


@pytest.mark.parametrize("partitions", [0, -3, True])
def test_no_metadata_for_a_topic_without_partitions(partitions: int) -> None:
    with pytest.raises(ValueError):
        encode_topic(partitions)


def test_records_travel_as_java_byte_arrays_never_as_pickles() -> None:
    service = SerializationServiceV1(Config())
    record = bytes(range(256)) * 4
    # What the publisher hands the client: a bytearray, which a Java member reads as byte[].
    data = service.to_data(bytearray(record))
    assert data.get_type() == CONSTANT_TYPE_BYTE_ARRAY
    assert bytes(service.to_object(data)) == record
    # bytes are no byte array to the client: it pickles them (and fails on most binary content).
    assert service.to_data(b"text").get_type() == PYTHON_TYPE_PICKLE
    with pytest.raises(HazelcastSerializationError):
        service.to_data(record)


def test_the_client_is_made_to_refuse_pickles_it_reads() -> None:
    service = SerializationServiceV1(Config())
    pickled = service.to_data({"anything": "python"})
    assert service.to_object(pickled) == {"anything": "python"}
    assert refuse_pickles(service)
    with pytest.raises(HazelcastSerializationError, match="pickled"):
        service.to_object(pickled)
    assert bytes(service.to_object(service.to_data(bytearray(b"still fine")))) == b"still fine"
    assert not refuse_pickles(object())


# -- the listener: client thread -> event loop ---------------------------------------------------------------


async def loop_turn() -> None:
    """Until every callback queued on the loop before this call has run (the loop runs them in order)."""
    marker = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(marker.set_result, None)
    await marker


def message(value: object) -> TopicMessage[Any]:
    return TopicMessage("t.0", value, time.time(), None)


class Hops:
    """The loop side of a PartitionListener: every batch handed over, in arrival order."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.cancelled: list[PartitionListener] = []
        self.changed = asyncio.Event()

    def deliver(self, records: list[bytes]) -> None:
        self.batches.append(records)
        self.changed.set()

    def on_cancel(self, listener: PartitionListener) -> None:
        self.cancelled.append(listener)
        self.changed.set()

    @property
    def records(self) -> list[bytes]:
        return [r for batch in self.batches for r in batch]

    async def wait(self, count: int, timeout: float = 5.0) -> list[bytes]:
        async with asyncio.timeout(timeout):
            while len(self.records) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.records


def listener_for(hops: Hops) -> PartitionListener:
    return PartitionListener("t.0", asyncio.get_running_loop(), hops.deliver, hops.on_cancel)


async def test_records_queued_while_the_loop_is_busy_hop_over_in_one_batch_in_order() -> None:
    hops = Hops()
    listener = listener_for(hops)
    values = [f"r{i:03d}".encode() for i in range(100)]
    # The loop is held by this join: everything the client thread delivers meanwhile waits for one hop.
    reactor = threading.Thread(target=lambda: [listener.on_message(message(bytearray(v))) for v in values])
    reactor.start()
    reactor.join()
    assert hops.batches == []
    assert await hops.wait(100) == values
    assert len(hops.batches) == 1
    assert listener.hops == 1
    assert listener.received == 100


async def test_records_keep_their_order_across_many_hops() -> None:
    hops = Hops()
    listener = listener_for(hops)
    values = [f"r{i:05d}".encode() for i in range(3000)]

    def reactor() -> None:
        for i, value in enumerate(values):
            listener.on_message(message(bytearray(value)))
            if i % 250 == 0:
                time.sleep(0.002)  # let the loop drain in between

    thread = threading.Thread(target=reactor)
    thread.start()
    await hops.wait(3000)
    thread.join()
    assert hops.records == values
    assert 1 < len(hops.batches) < 3000  # batched, not one hop per record
    assert all(isinstance(r, bytes) for r in hops.records)


async def test_payloads_that_are_not_byte_arrays_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    hops = Hops()
    listener = listener_for(hops)
    for value in (bytearray(b"one"), "a string", 42, HazelcastJsonValue("{}"), None, bytearray(b"two")):
        listener.on_message(message(value))
    assert await hops.wait(2) == [b"one", b"two"]
    assert listener.skipped == 4
    assert "Skipped a str message on reliable topic t.0" in caplog.text


async def test_a_closed_listener_drops_what_it_had_not_handed_over() -> None:
    hops = Hops()
    listener = listener_for(hops)
    listener.on_message(message(bytearray(b"queued")))
    listener.close()
    listener.on_message(message(bytearray(b"late")))
    await loop_turn()  # the hop the first record scheduled has run
    assert hops.batches == []


async def test_listener_starts_at_the_end_tolerates_loss_and_survives_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = listener_for(Hops())
    assert listener.retrieve_initial_sequence() == -1
    listener.store_sequence(41)
    assert listener.last_sequence == 41
    assert listener.is_terminal(ValueError("handler bug")) is False
    with caplog.at_level(logging.WARNING):
        assert listener.is_loss_tolerant() is True
    assert "Records lost on reliable topic t.0" in caplog.text


async def test_a_cancel_by_the_client_is_reported_on_the_loop_unless_closed() -> None:
    hops = Hops()
    listener = listener_for(hops)
    threading.Thread(target=listener.on_cancel).start()
    await eventually(lambda: bool(hops.cancelled))
    assert hops.cancelled == [listener]
    closed = listener_for(hops)
    closed.close()
    closed.on_cancel()
    await loop_turn()  # a report would have been queued by now, and run
    assert hops.cancelled == [listener]


class ProxyDouble:
    """The two calls a subscription makes on a reliable topic proxy, answered as the client answers them."""

    name = "t.0"

    def __init__(self) -> None:
        self.listeners: dict[str, PartitionListener] = {}
        self.removed: list[str] = []
        self.registered = 0

    def add_listener(self, listener: PartitionListener) -> HzFuture[str]:
        self.registered += 1
        registration = f"reg-{self.registered}"
        self.listeners[registration] = listener
        done: HzFuture[str] = HzFuture()
        threading.Thread(target=done.set_result, args=(registration,)).start()
        return done

    def remove_listener(self, registration: str) -> HzFuture[bool]:
        self.removed.append(registration)
        listener = self.listeners.pop(registration, None)
        if listener is not None:
            listener.on_cancel()  # as the client's runner does, synchronously
        done: HzFuture[bool] = HzFuture()
        done.set_result(listener is not None)
        return done

    def publish_from_client_thread(self, value: bytes) -> None:
        def run() -> None:
            for listener in list(self.listeners.values()):
                listener.on_message(message(bytearray(value)))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()


async def test_a_subscription_listens_again_when_the_client_drops_its_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = ProxyDouble()
    got: list[bytes] = []
    sub = HazelcastSubscription("t", 0, proxy, got.append, asyncio.get_running_loop())  # type: ignore[arg-type]
    await sub.start(5.0)
    first = sub.listener
    assert first is not None and list(proxy.listeners) == ["reg-1"]
    proxy.publish_from_client_thread(b"one")
    await eventually(lambda: got == [b"one"])
    # The client gives up on the listener (e.g. a payload it cannot deserialise) without being asked.
    proxy.listeners.pop("reg-1")
    first.on_cancel()
    await eventually(lambda: list(proxy.listeners) == ["reg-2"])
    assert "listening again from the end" in caplog.text
    proxy.publish_from_client_thread(b"two")
    await eventually(lambda: got == [b"one", b"two"])
    await sub.close()
    await sub.close()
    assert proxy.removed == ["reg-2"]
    assert proxy.listeners == {}


async def test_no_listening_again_once_the_client_is_shut_down(caplog: pytest.LogCaptureFixture) -> None:
    proxy = ProxyDouble()
    loop = asyncio.get_running_loop()
    sub = HazelcastSubscription("t", 0, proxy, [].append, loop, lambda: False)  # type: ignore[arg-type]
    await sub.start(5.0)
    listener = sub.listener
    assert listener is not None
    proxy.listeners.pop("reg-1")
    listener.on_cancel()
    await eventually(lambda: "the Hazelcast client is shut down" in caplog.text)
    await asyncio.sleep(0.7)  # longer than the first pause before listening again
    assert proxy.registered == 1
    await sub.close()


async def test_a_hazelcast_future_completes_an_asyncio_future_from_the_reactor_thread() -> None:
    loop = asyncio.get_running_loop()
    ok: HzFuture[int] = HzFuture()
    failed: HzFuture[int] = HzFuture()
    waiting_ok, waiting_failed = bridge(ok, loop), bridge(failed, loop)
    threading.Thread(target=ok.set_result, args=(7,)).start()
    threading.Thread(target=failed.set_exception, args=(OSError("member gone"),)).start()
    assert await asyncio.wait_for(waiting_ok, 5) == 7
    with pytest.raises(OSError, match="member gone"):
        await asyncio.wait_for(waiting_failed, 5)
    # Already complete: the callback runs at once in this thread, and still goes through the loop.
    done: HzFuture[str] = HzFuture()
    done.set_result("now")
    assert await bridge(done, loop) == "now"


# -- ordered publishing --------------------------------------------------------------------------------------


class TopicDouble:
    """publish_all as the client answers it: a future the test completes from another thread."""

    def __init__(self, name: str = "t.0") -> None:
        self.name = name
        self.batches: list[list[bytes]] = []
        self.types: set[type] = set()
        self.pending: list[HzFuture[None]] = []

    def publish_all(self, messages: Any) -> HzFuture[None]:
        self.batches.append([bytes(m) for m in messages])
        self.types |= {type(m) for m in messages}
        done: HzFuture[None] = HzFuture()
        self.pending.append(done)
        return done

    def acknowledge(self, error: Exception | None = None) -> None:
        done = self.pending.pop(0)
        if error is None:
            threading.Thread(target=done.set_result, args=(None,)).start()
        else:
            threading.Thread(target=done.set_exception, args=(error,)).start()


async def test_publishes_go_in_call_order_one_batch_in_flight_per_partition() -> None:
    topic = TopicDouble()
    resolved: list[tuple[str, int]] = []

    async def resolve(name: str, partition: int) -> TopicDouble:
        resolved.append((name, partition))
        return topic

    publisher = OrderedPublisher(asyncio.get_running_loop(), resolve)
    first = [publisher.publish("t", 0, f"a{i}".encode()) for i in range(10)]
    await eventually(lambda: topic.batches, what="the first batch")
    assert topic.batches == [[f"a{i}".encode() for i in range(10)]]  # one loop turn, one batch
    assert topic.types == {bytearray}  # a Java byte[], not a pickle
    second = [publisher.publish("t", 0, f"b{i}".encode()) for i in range(5)]
    third = [publisher.publish("t", 0, f"c{i}".encode()) for i in range(3)]
    await loop_turn()  # a flush queued by these publishes would have run
    assert len(topic.batches) == 1  # the next waits for the one in flight
    assert not any(f.done() for f in first)
    topic.acknowledge()
    await asyncio.wait_for(asyncio.gather(*first), 5)
    await eventually(lambda: len(topic.batches) == 2, what="the second batch")
    # Everything queued meanwhile went as one batch, in order.
    assert topic.batches[1] == [*(f"b{i}".encode() for i in range(5)), *(f"c{i}".encode() for i in range(3))]
    topic.acknowledge()
    await asyncio.wait_for(asyncio.gather(*second, *third), 5)
    assert resolved == [("t", 0)]  # looked up once
    assert publisher.batches == 2
    await publisher.close()


async def test_batches_are_bounded_in_records_and_bytes() -> None:
    topic = TopicDouble()

    async def resolve(name: str, partition: int) -> TopicDouble:
        return topic

    publisher = OrderedPublisher(
        asyncio.get_running_loop(), resolve, max_batch_records=4, max_batch_bytes=100
    )
    futures = [publisher.publish("t", 0, bytes([i]) * 30) for i in range(6)]
    futures.append(publisher.publish("t", 0, bytes(500)))  # larger than a batch: goes alone
    futures.append(publisher.publish("t", 0, b"last"))
    for n in range(4):
        await eventually(lambda: topic.pending, what=f"batch {n + 1} in flight")
        topic.acknowledge()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert [len(b) for b in topic.batches] == [3, 3, 1, 1]
    assert [r for b in topic.batches for r in b][-2:] == [bytes(500), b"last"]
    await publisher.close()


async def test_a_failed_batch_fails_its_records_and_the_next_ones_still_go() -> None:
    topic = TopicDouble()

    async def resolve(name: str, partition: int) -> TopicDouble:
        return topic

    publisher = OrderedPublisher(asyncio.get_running_loop(), resolve)
    lost = publisher.publish("t", 0, b"lost")
    await eventually(lambda: topic.pending, what="the first batch in flight")
    kept = publisher.publish("t", 0, b"kept")
    topic.acknowledge(OSError("connection reset"))
    with pytest.raises(ConnectorError, match=r"publish to reliable topic t\.0 failed: connection reset"):
        await asyncio.wait_for(lost, 5)
    await eventually(lambda: topic.pending, what="the second batch in flight")
    topic.acknowledge()
    await asyncio.wait_for(kept, 5)
    assert topic.batches == [[b"lost"], [b"kept"]]
    await publisher.close()


async def test_an_unknown_partition_fails_every_record_queued_for_it_and_is_looked_up_again() -> None:
    lookups = 0

    async def resolve(name: str, partition: int) -> TopicDouble:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.01)
        raise ConnectorError(f"topic {name} does not exist")

    publisher = OrderedPublisher(asyncio.get_running_loop(), resolve)
    queued = [publisher.publish("nowhere", 0, b"x") for _ in range(3)]
    for fut in queued:
        with pytest.raises(ConnectorError, match="does not exist"):
            await asyncio.wait_for(fut, 5)
    with pytest.raises(ConnectorError, match="does not exist"):
        await asyncio.wait_for(publisher.publish("nowhere", 0, b"y"), 5)
    assert lookups == 2
    await publisher.close()


async def test_closing_the_publisher_waits_for_acknowledgements_then_fails_the_rest() -> None:
    topic = TopicDouble()

    async def resolve(name: str, partition: int) -> TopicDouble:
        return topic

    publisher = OrderedPublisher(asyncio.get_running_loop(), resolve)
    acknowledged = publisher.publish("t", 0, b"in flight")
    await eventually(lambda: topic.pending, what="the first batch in flight")
    queued = publisher.publish("t", 0, b"queued")
    closing = asyncio.create_task(publisher.close(timeout=0.3))
    await loop_turn()  # close() has begun to wait for the batch in flight
    topic.acknowledge()  # the in-flight batch completes; the queued record goes out next and is never acked
    await closing
    await acknowledged
    with pytest.raises(ConnectorError, match="closed before the record was acknowledged"):
        await queued
    with pytest.raises(ConnectorError, match="closed"):
        await publisher.publish("t", 0, b"after")


# -- the connector without a member --------------------------------------------------------------------------


async def test_records_over_4_mib_are_refused_before_anything_else() -> None:
    connector = HazelcastConnector({"cluster_members": "127.0.0.1:5701"})
    with pytest.raises(ConnectorError, match=f"exceeds the maximum of {MAX_RECORD_BYTES} bytes"):
        await connector.publish("t", 0, bytes(MAX_RECORD_BYTES + 1))
    with pytest.raises(ConnectorError, match="not started"):
        await connector.publish("t", 0, bytes(MAX_RECORD_BYTES))
    with pytest.raises(ConnectorError, match="not started"):
        await connector.ensure_topic("t", 1)


def _worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive() and not t.name.startswith("asyncio_")}


async def test_start_against_a_closed_port_raises_within_the_bound_and_leaves_no_threads() -> None:
    before = _worker_threads()
    port = free_port()
    connector = HazelcastConnector({"cluster_members": f"127.0.0.1:{port}"}, connect_timeout=1.5)
    refused = (
        rf"cannot reach Hazelcast at 127\.0\.0\.1:{port} \(cluster dev\): no member answered within 1\.5 s$"
    )
    with pytest.raises(ConnectorError, match=refused):
        async with asyncio.timeout(8):  # past the bound: a TimeoutError, not this ConnectorError
            await connector.start()
    assert _worker_threads() - before == set()
    await connector.close()
    await connector.close()
    with pytest.raises(ConnectorError, match="closed"):
        await connector.start()
    with pytest.raises(ConnectorError, match="closed"):
        await connector.publish("t", 0, b"x")


async def test_the_connect_bound_comes_from_cluster_connect_timeout() -> None:
    port = free_port()
    connector = HazelcastConnector({"cluster_members": f"127.0.0.1:{port}", "cluster_connect_timeout": "1"})
    with pytest.raises(ConnectorError, match=r"cannot reach Hazelcast .*: no member answered within 1 s$"):
        async with asyncio.timeout(8):  # past the bound: a TimeoutError, not this ConnectorError
            await connector.start()
    await connector.close()
