"""What an app sends to one partition in one loop turn leaves as one record and arrives as the events in it.

A broker client may cut a run of records into several requests, and the recipient then fetches them in
pieces; a batch record cannot be cut. Records of a segment's size go alone, and the order of events holds.
Only a peer whose join says it takes batches is sent them: an app from before batches gets records one by one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import msgpack
import pytest

from meshkit import AppConfig, EventEnvelope, Platform
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import MeshNode, VirtualTopic
from meshkit.mesh._frames import batch_record, event_record, parse
from meshkit.security import Identity
from tests.support.identities import join
from tests.support.transport_stubs import StubConnector, StubPlatform, stub_transport

ORIGIN = "20260101" + "c" * 32
OWN = VirtualTopic("multiplex.0001", 1)
OTHER = VirtualTopic("multiplex.0001", 2)


def _request(n: int, body: object = "hello") -> EventEnvelope:
    return EventEnvelope("hello.world", body, reply_to="@" + ORIGIN, cid=f"c{n}", id=f"e{n}")


async def test_events_of_one_loop_turn_to_one_partition_leave_as_one_record() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    for n in range(5):
        transport.send_event(OWN, ORIGIN, _request(n), batch=True)
    transport.send_event(OTHER, ORIGIN, _request(5), batch=True)
    assert connector.records == []  # nothing leaves before the loop turn ends
    await asyncio.sleep(0)
    assert connector.destinations == [("multiplex.0001", 1), ("multiplex.0001", 2)]
    batch, single = (parse(record) for record in connector.records)
    assert batch["type"] == "batch" and len(batch["records"]) == 5
    assert single["type"] == "event"  # one record alone is sent as it is
    for record in connector.records:
        transport.receive(record)
    assert [event.cid for event in platform.events] == ["c0", "c1", "c2", "c3", "c4", "c5"]
    await asyncio.sleep(0)
    assert transport.sent == 6  # events, not broker records
    await transport.close()


async def test_segments_go_alone_and_the_order_of_events_holds() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    large = os.urandom(200_000)  # three full segments and a short fourth
    transport.send_event(OWN, ORIGIN, _request(0), batch=True)
    transport.send_event(OWN, ORIGIN, _request(1, large), batch=True)
    transport.send_event(OWN, ORIGIN, _request(2), batch=True)
    transport.send_event(OWN, ORIGIN, _request(3), batch=True)
    await asyncio.sleep(0)
    kinds = [parse(record)["type"] for record in connector.records]
    assert kinds == ["event", "segment", "segment", "segment", "batch"]  # the short segment rides along
    last = parse(connector.records[-1])["records"]
    assert [parse(record)["type"] for record in last] == ["segment", "event", "event"]
    assert all(len(record) <= 65536 + 200 for record in connector.records)
    for record in connector.records:
        transport.receive(record)
    assert [event.cid for event in platform.events] == ["c0", "c1", "c2", "c3"]
    assert platform.events[1].body == large
    await transport.close()


async def test_a_batch_never_grows_past_one_segment() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    for n in range(40):  # 40 events of about 5 KB: 200 KB in all
        transport.send_event(OWN, ORIGIN, _request(n, "x" * 5000), batch=True)
    await asyncio.sleep(0)
    assert len(connector.records) > 3
    assert all(len(record) <= 65536 + 200 for record in connector.records)
    for record in connector.records:
        transport.receive(record)
    assert [event.cid for event in platform.events] == [f"c{n}" for n in range(40)]
    await transport.close()


async def test_a_bad_record_in_a_batch_costs_only_itself() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    good = [event_record(ORIGIN, _request(n)) for n in range(2)]
    garbage = b"\xc1\xff not msgpack"
    stray = event_record("20260101" + "d" * 32, _request(9))  # for another app: skipped
    batch = msgpack.packb({"type": "batch", "origin": "*", "records": [good[0], garbage, 42, stray, good[1]]})
    transport.receive(batch)
    assert [event.cid for event in platform.events] == ["c0", "c1"]
    assert transport.skipped == 3
    await transport.close()


async def test_a_batch_inside_a_batch_is_refused() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    inner = batch_record([event_record(ORIGIN, _request(0))])
    transport.receive(batch_record([inner, event_record(ORIGIN, _request(1))]))
    assert [event.cid for event in platform.events] == ["c1"]
    assert transport.skipped == 1
    for wrong in ({"type": "batch", "origin": "*", "records": "no list"}, {"type": "batch", "origin": "*"}):
        transport.receive(msgpack.packb(wrong))
    assert transport.skipped == 3
    await transport.close()


async def test_a_batch_the_broker_refuses_fails_each_request_in_it_at_once() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector(refuse="topic authorization failed")
    transport = stub_transport(platform, connector)
    for n in range(3):
        transport.send_event(OWN, ORIGIN, _request(n), batch=True)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the refused publish's callback
    assert len(connector.records) == 1
    assert [(r.cid, r.status) for r in platform.replies] == [("c0", 503), ("c1", 503), ("c2", 503)]
    assert "topic authorization failed" in platform.replies[0].body
    await transport.close()


async def test_records_go_one_by_one_unless_the_recipient_takes_batches() -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    for n in range(3):
        transport.send_event(OWN, ORIGIN, _request(n))
    await asyncio.sleep(0)
    assert [parse(record)["type"] for record in connector.records] == ["event", "event", "event"]
    await transport.close()


OLD = "20261125" + "0d" * 16  # a meshkit from before batches: its join does not mention them
NEW = "20261125" + "0e" * 16


@pytest.fixture
async def node() -> AsyncIterator[MeshNode]:
    platform = Platform(AppConfig.load(argv=[], environ={}), name="rest-example", functions=[])
    await platform.start()
    mesh_node = MeshNode(platform, MemoryConnector(MemoryBroker()))
    platform.remote = mesh_node.router
    yield mesh_node
    platform.remote = None
    await platform.stop()


async def test_a_peer_is_sent_batches_only_when_its_join_says_it_takes_them(node: MeshNode) -> None:
    assert node._me()["batches"] is True  # what this app says in its own join and answers
    old, new = Identity(), Identity()
    for origin, identity in ((OLD, old), (NEW, new)):
        node._on_notice({"type": "member", "origin": origin, "key": identity.public_key})
    node._on_control(old.sign_control(join(OLD, topic="multiplex.0001-001")))
    node._on_control(new.sign_control(join(NEW, topic="multiplex.0001-002", batches=True)))
    assert (node.table.peers[OLD].batches, node.table.peers[NEW].batches) == (False, True)
    connector = StubConnector()
    node.transport.connector = connector  # type: ignore[assignment]  # keeps what the node publishes
    for n in range(3):
        node.router.send(OLD, EventEnvelope("hello.pojo", n))
        node.router.send(NEW, EventEnvelope("hello.pojo", n))
    await asyncio.sleep(0)
    kinds = [parse(record)["type"] for record in connector.records]
    sent = [(partition, kind) for (_, partition), kind in zip(connector.destinations, kinds, strict=True)]
    assert sorted(sent) == [(1, "event"), (1, "event"), (1, "event"), (2, "batch")]
