"""The mesh's own logic, without a broker: topic names, records, segments, the routing table, and what
becomes of a request to a peer that leaves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgpack
import pytest

from meshkit import AppConfig, EventEnvelope, FunctionRegistry
from meshkit.config import ConfigError
from meshkit.mesh import Peer, RoutingTable, TopicLayout, mesh_settings
from meshkit.mesh._frames import EVERYONE, FrameError, Reassembler, control_record, event_records, parse
from meshkit.testing import TestMesh

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


# -- a peer that leaves -----------------------------------------------------------------------------------


async def test_requests_to_a_peer_that_leaves_fail_at_once() -> None:
    far, reached, release = FunctionRegistry(), asyncio.Event(), asyncio.Event()

    @far.route("far.away")
    async def hold(body: Any) -> str:
        reached.set()
        await release.wait()  # no reply until the test is done
        return "too late"

    async with TestMesh() as mesh:
        caller = await mesh.app("caller", [])
        remote = await mesh.app("remote", far)
        pending = asyncio.create_task(caller.call(EventEnvelope("far.away", 1), timeout=30))
        await asyncio.wait_for(reached.wait(), 5)  # it went through the mesh to the remote app
        left = f"Peer {remote.origin} left before replying"
        assert caller.fail_requests_to("o-elsewhere", "not this one") == 0
        assert caller.fail_requests_to(remote.origin, left) == 1
        reply = await asyncio.wait_for(pending, 1)
        assert (reply.status, reply.body) == (503, left)
        assert caller.fail_requests_to(remote.origin, "again") == 0  # nothing left behind
        release.set()


def test_the_mesh_takes_more_virtual_topics_than_mercurys_288_up_to_what_the_names_can_say() -> None:
    def settings(**properties: str) -> TopicLayout:
        return mesh_settings(AppConfig.load(argv=[], environ={}, overrides=properties))[0]

    layout = settings(**{"max.virtual.topics": "5000"})
    assert layout.virtual(4999).name == "multiplex.0157-007"  # 5000 / 32 partitions: 157 physical topics
    assert layout.index_of("multiplex.0157-007") == 4999
    assert settings(**{"app.partitions.per.topic": "1000", "max.virtual.topics": str(9999 * 1000)})
    with pytest.raises(ConfigError, match=r"max.virtual.topics must be 1..319968 \(9999 topics"):
        settings(**{"max.virtual.topics": str(9999 * 32 + 1)})
