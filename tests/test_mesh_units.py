"""The mesh's own logic, without a broker: topic names, records, segments, routing table, monitor state."""

from __future__ import annotations

import logging

import msgpack
import pytest

from meshkit.mesh import Peer, RoutingTable, TopicLayout
from meshkit.mesh._frames import EVERYONE, FrameError, Reassembler, control_record, event_records, parse
from presence_server._state import MeshState
from tests.identities import PUBLIC_KEY

# -- virtual topics ------------------------------------------------------------------------------------------


def test_virtual_topics_are_partitions_of_physical_topics() -> None:
    layout = TopicLayout(partitions_per_topic=32, max_virtual_topics=288)
    assert layout.virtual(0).name == "multiplex.0001-000"
    assert layout.virtual(33).name == "multiplex.0002-001"
    assert layout.virtual(287).name == "multiplex.0009-031"
    assert (layout.virtual(33).topic, layout.virtual(33).partition) == ("multiplex.0002", 1)
    assert all(layout.index_of(layout.virtual(i).name) == i for i in range(288))


@pytest.mark.parametrize(
    "name",
    [
        "multiplex.0001",
        "multiplex.0000-001",
        "multiplex.0001-032",
        "multiplex.0010-000",
        "other.0001-000",
        "multiplex.1-1",
    ],
)
def test_names_outside_the_layout_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        TopicLayout(32, 288).index_of(name)
    with pytest.raises(ValueError):
        TopicLayout(32, 288).virtual(288)


# -- records and segments ------------------------------------------------------------------------------------


def test_small_events_travel_in_one_record_addressed_to_their_recipient() -> None:
    [record] = event_records("o1", b"event", 64 * 1024, reply="multiplex.0001-002")
    assert parse(record) == {
        "type": "event",
        "origin": "o1",
        "reply": "multiplex.0001-002",
        "payload": b"event",
    }


def test_large_events_are_segmented_and_reassembled_in_any_order() -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes
    records = event_records("o1", data, 64 * 1024)
    assert len(records) == 4
    frames = [parse(r) for r in records]
    assert all(len(f["payload"]) <= 64 * 1024 for f in frames)
    joiner = Reassembler(max_event_bytes=1 << 20)
    assert joiner.add(frames[3]) is None
    assert joiner.add(frames[0]) is None
    assert joiner.add(frames[2]) is None
    assert joiner.add(frames[1]) == data
    assert joiner.held_bytes == 0


def test_segments_beyond_the_maximum_are_dropped_not_hoarded() -> None:
    frames = [parse(r) for r in event_records("o1", b"x" * 300_000, 64 * 1024)]
    joiner = Reassembler(max_event_bytes=100_000)
    with pytest.raises(FrameError):
        for frame in frames:
            joiner.add(frame)
    assert joiner.held_bytes == 0


def test_incomplete_segments_expire() -> None:
    frames = [parse(r) for r in event_records("o1", b"y" * 200_000, 64 * 1024)]
    joiner = Reassembler(max_event_bytes=1 << 20, expiry_seconds=0.0)
    joiner.add(frames[0])
    joiner.add(parse(event_records("o1", b"z" * 100_000, 64 * 1024)[0]))  # the next add sweeps the stale one
    assert joiner.held_bytes == 64 * 1024


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\xc1garbage",
        msgpack.packb([1, 2]),
        msgpack.packb({"type": "event"}),
        msgpack.packb({"origin": "x"}),
    ],
)
def test_garbage_records_are_a_frame_error(record: bytes) -> None:
    with pytest.raises(FrameError):
        parse(record)


@pytest.mark.parametrize("bad", [{"id": 1}, {"index": 5, "count": 2}, {"payload": "text"}])
def test_malformed_segments_are_a_frame_error(bad: dict[str, object]) -> None:
    frame = parse(event_records("o1", b"q" * 70_000, 64 * 1024)[0]) | bad
    with pytest.raises(FrameError):
        Reassembler(1 << 20).add(frame)


def test_control_records_carry_a_map() -> None:
    assert parse(control_record(EVERYONE, {"type": "leave", "origin": "o2"}))["payload"] == {
        "type": "leave",
        "origin": "o2",
    }


# -- the routing table ---------------------------------------------------------------------------------------


def _peer(origin: str, *routes: str) -> Peer:
    return Peer(origin, f"app-{origin}", "1.0", "APP", TopicLayout().virtual(int(origin[-1])), set(routes))


def test_joins_register_routes_and_leaves_drop_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "meshkit.mesh.registry")
    table = RoutingTable()
    assert table.join(_peer("o1", "hello.world", "hello.pojo"))
    assert not table.join(_peer("o1", "hello.world", "hello.pojo"))  # a second join refreshes
    assert table.origins("hello.pojo") == ["o1"]
    table.leave("o1")
    assert table.origins("hello.pojo") == [] and table.pick("hello.pojo") is None
    assert caplog.messages == [
        "Peer o1 joins (app-o1 1.0)",
        "hello.pojo (app-o1, APP.o1) registered",
        "hello.world (app-o1, APP.o1) registered",
        "Peer o1 left (app-o1 1.0)",
        "hello.pojo o1 unregistered",
        "hello.world o1 unregistered",
    ]


def test_requests_are_balanced_round_robin() -> None:
    table = RoutingTable()
    for origin in ("o1", "o2", "o3"):
        table.join(_peer(origin, "hello.world"))
    picks = [table.pick("hello.world") for _ in range(300)]
    assert {o: picks.count(o) for o in ("o1", "o2", "o3")} == {"o1": 100, "o2": 100, "o3": 100}


def test_route_updates_and_rejoins_with_fewer_routes() -> None:
    table = RoutingTable()
    table.join(_peer("o1", "a.one", "a.two"))
    table.update("o1", add={"a.three"}, remove={"a.one"})
    assert sorted(table.describe()[0]) == ["a.three", "a.two"]
    table.join(_peer("o1", "a.two"))
    assert sorted(table.describe()[0]) == ["a.two"]
    table.update("unknown", add={"x.y"})  # routes of an unknown peer are ignored
    assert table.origins("x.y") == []


# -- the monitors' shared state ------------------------------------------------------------------------------

INFO = {
    "name": "app",
    "version": "1",
    "personality": "APP",
    "group": 1,
    "created": "2026-11-25T00:00:00.000Z",
    "key": PUBLIC_KEY,
}


def test_the_first_claim_in_log_order_wins_a_topic() -> None:
    state = MeshState()
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO}).won
    assert not state.claim({"topic": 0, "origin": "b", "monitor": "m2", "info": INFO}).won
    assert state.holders == {0: "a"}
    # the holder may claim its topic again (it moved to another monitor)
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m2", "info": INFO}).won
    assert state.connections["a"].monitor == "m2"


def test_a_topic_is_never_held_by_two_apps_whatever_the_order() -> None:
    state = MeshState()
    messages = [
        {"topic": t % 3, "origin": o, "monitor": "m", "info": INFO} for t, o in enumerate("abcdefabc")
    ]
    for message in messages:
        state.claim(message)
    holders = list(state.holders.values())
    assert len(holders) == len(set(holders))
    assert all(state.connections[o].topic == t for t, o in state.holders.items())


def test_leaving_releases_the_topic_and_moving_releases_the_old_one() -> None:
    state = MeshState()
    state.claim({"topic": 4, "origin": "a", "monitor": "m", "info": INFO})
    moved = state.claim({"topic": 5, "origin": "a", "monitor": "m", "info": INFO})
    assert moved.released == 4 and state.holders == {5: "a"}
    assert state.leave("a") is not None
    assert state.holders == {} and state.free_topic(288, set()) == 0
    assert state.leave("a") is None


def test_a_released_topic_is_handed_out_again_last() -> None:
    """Never-used topics first, then the one released longest ago: stray records for a gone app rarely
    meet a newcomer, and the partitions' logs grow evenly."""
    state = MeshState(max_topics=4)
    for topic, origin in enumerate("abc"):
        state.claim({"topic": topic, "origin": origin, "monitor": "m", "info": INFO})
    state.leave("b")
    state.leave("a")
    assert state.free_topic(4, set()) == 3  # never used
    state.claim({"topic": 3, "origin": "d", "monitor": "m", "info": INFO})
    assert state.free_topic(4, set()) == 1  # released before topic 0
    assert state.free_topic(4, {1}) == 0
    state.claim({"topic": 1, "origin": "e", "monitor": "m", "info": INFO})
    state.claim({"topic": 0, "origin": "f", "monitor": "m", "info": INFO})
    assert state.free_topic(4, set()) is None


def test_a_new_monitor_merges_a_snapshot_without_overwriting() -> None:
    old, new = MeshState(), MeshState()
    old.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO})
    new.claim({"topic": 1, "origin": "b", "monitor": "m2", "info": INFO})
    new.merge(old.snapshot())
    assert new.holders == {0: "a", 1: "b"}


async def test_requests_to_a_peer_that_leaves_fail_at_once() -> None:
    from meshkit import AppConfig, EventEnvelope, Platform

    platform = Platform(AppConfig.load(argv=[], environ={}), name="caller", functions=[])
    await platform.start()
    try:
        sent: list[str] = []

        class Router:
            def pick(self, route: str) -> str | None:
                return "o-remote"

            def origins(self, route: str) -> list[str]:
                return ["o-remote"]

            def send(self, origin: str, event: EventEnvelope) -> None:
                sent.append(origin)
                platform.note_target(event, origin)

        platform.remote = Router()
        import asyncio

        pending = asyncio.create_task(platform.call(EventEnvelope("far.away", 1), timeout=30))
        await asyncio.sleep(0)
        assert sent == ["o-remote"]
        assert platform.fail_requests_to("o-elsewhere", "not this one") == 0
        assert platform.fail_requests_to("o-remote", "Peer o-remote left before replying") == 1
        reply = await asyncio.wait_for(pending, 1)
        assert (reply.status, reply.body) == (503, "Peer o-remote left before replying")
        assert platform.fail_requests_to("o-remote", "again") == 0  # nothing left behind
    finally:
        await platform.stop()


def test_a_stale_leave_from_a_monitor_the_app_has_moved_away_from_changes_nothing() -> None:
    state = MeshState()
    state.claim({"topic": 2, "origin": "a", "monitor": "m1", "info": INFO})
    state.claim({"topic": 2, "origin": "a", "monitor": "m2", "info": INFO})  # the app moved to m2
    assert state.leave("a", owner="m1") is None  # m1 woke up and saw its old socket close
    assert state.holders == {2: "a"} and state.connections["a"].monitor == "m2"
    assert state.leave("a", owner="m2") is not None


@pytest.mark.parametrize(
    "bad",
    [{"topic": 288}, {"topic": -1}, {"info": "not a map"}, {"info": {"name": "x"}}, {"topic": "zero"}],
)
def test_a_malformed_claim_changes_nothing(bad: dict[str, object]) -> None:
    state = MeshState()
    with pytest.raises((ValueError, KeyError, TypeError)):
        state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO} | bad)
    assert state.holders == {} and state.connections == {}


def test_kafka_tls_and_sasl_settings_pass_through_to_the_client() -> None:
    from meshkit import AppConfig
    from meshkit.connectors.kafka import consumer_config, kafka_settings, producer_config

    config = AppConfig.load(
        argv=[],
        environ={"KAFKA_PASSWORD": "s3cret"},
        overrides={
            "bootstrap.servers": "broker-1:9093,broker-2:9093",
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "meshkit",
            "sasl.password": "${KAFKA_PASSWORD}",
            "ssl.ca.location": "/etc/ssl/certs/kafka-ca.pem",
            "kafka.client.rack": "eu-west-1a",
            "application.name": "not-a-kafka-setting",
        },
    )
    settings = kafka_settings(config)
    assert settings == {
        "bootstrap.servers": "broker-1:9093,broker-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "meshkit",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/certs/kafka-ca.pem",
        "client.rack": "eu-west-1a",
    }
    for client in (producer_config(settings), consumer_config(settings)):
        assert client["security.protocol"] == "SASL_SSL" and client["sasl.password"] == "s3cret"
        assert client["ssl.ca.location"] == "/etc/ssl/certs/kafka-ca.pem"


async def test_an_app_asking_for_a_topic_another_app_holds_is_given_another() -> None:
    """A resumed app asks for the virtual topic it had; if somebody holds it now, it gets a free one."""
    from meshkit import AppConfig, Platform
    from meshkit.connectors.memory import MemoryBroker, MemoryConnector
    from presence_server._monitor import PresenceMonitor

    config = AppConfig.load(argv=[], environ={}, overrides={"monitor.heartbeat": "0.05"})
    platform = Platform(config, name="presence-monitor", functions=[])
    monitor = PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(32, 288), groups=10)
    await monitor.start()
    try:
        hello = {**INFO, "topic": "multiplex.0001-007"}
        assert await monitor._admit("20261125" + "a" * 32, hello) == 7  # free: granted
        assert await monitor._admit("20261125" + "b" * 32, hello) == 0  # held: the first never-used one
        assert monitor.state.holders == {7: "20261125" + "a" * 32, 0: "20261125" + "b" * 32}
    finally:
        await monitor.stop()
