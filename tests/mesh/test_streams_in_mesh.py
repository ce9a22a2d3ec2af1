"""Event streams between two apps of a mesh, in one process (meshkit.testing.TestMesh: the mesh's own code
over the memory connector): segments, credit and cancel all travel as records between the apps.

The same against a real broker and real processes: tests/mesh/test_mesh_streams.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from meshkit import Platform, PostOffice
from meshkit.core import DATA, EOF, EXCEPTION, stream_signal
from meshkit.testing import TestMesh
from tests.apps import streaming
from tests.support.eventually import eventually


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    streaming.STATE.update(started=0, stopped=0, produced=0, peak_outstanding=0)


@pytest.fixture
async def apps() -> AsyncIterator[tuple[TestMesh, Platform, Platform]]:
    async with TestMesh({"stream.window": "32"}) as mesh:
        producer = await mesh.app("producer", streaming.functions)
        reader = await mesh.app("reader", [])
        yield mesh, producer, reader


async def test_ten_thousand_segments_cross_the_mesh_in_order(
    apps: tuple[TestMesh, Platform, Platform],
) -> None:
    mesh, producer, reader = apps
    received = mesh.node(reader).transport.received
    segments = [s async for s in PostOffice(reader).stream("stream.count", {"count": 10_000})]
    assert [int(s.body) for s in segments[:-1]] == list(range(10_000))
    assert stream_signal(segments[-1]) == EOF
    assert not any("x-stream-seq" in s.headers for s in segments)  # numbered on the way, not for the reader
    # what one loop turn sent travelled as one run: far fewer envelopes than segments
    assert mesh.node(reader).transport.received - received < 10_000 / 8
    assert producer.pool("stream.count").stats.segments == 10_000  # type: ignore[union-attr]


async def test_segments_over_64_kb_cross_the_mesh_in_pieces_and_arrive_whole(
    apps: tuple[TestMesh, Platform, Platform],
) -> None:
    _, _, reader = apps
    stream = PostOffice(reader).stream("stream.count", {"count": 4, "size": 300_000})
    data = [b async for b in stream.data()]
    assert [len(d) for d in data] == [300_000] * 4 and [int(d[:8]) for d in data] == [0, 1, 2, 3]


async def test_breaking_off_stops_the_producer_in_the_other_app(
    apps: tuple[TestMesh, Platform, Platform],
) -> None:
    _, producer, reader = apps
    seen = 0
    async for _ in PostOffice(reader).stream("stream.endless"):
        seen += 1
        if seen == 500:
            break
    await eventually(lambda: streaming.STATE["stopped"] == 1)
    assert not producer.streams.outlets and not reader.streams.readers
    assert streaming.STATE["produced"] <= seen + 32 + 1  # never more than a window ahead


async def test_a_slow_reader_holds_a_remote_producer_to_the_window(
    apps: tuple[TestMesh, Platform, Platform],
) -> None:
    _, _, reader = apps
    stream = PostOffice(reader).stream("stream.endless", {"size": 65_536})
    for _ in range(100):
        await anext(stream)
    assert streaming.STATE["peak_outstanding"] <= 32
    assert streaming.STATE["produced"] <= 100 + 32
    await stream.aclose()


async def test_idle_timeout_and_producer_error_end_in_band(apps: tuple[TestMesh, Platform, Platform]) -> None:
    _, producer, reader = apps
    po = PostOffice(reader)
    quiet = [s async for s in po.stream("stream.quiet", {"seconds": 30}, timeout=0.3)]
    assert [stream_signal(s) for s in quiet] == [DATA, EXCEPTION] and quiet[-1].status == 408
    await eventually(lambda: not producer.streams.outlets)  # the cancel reached the quiet producer
    failed = [s async for s in po.stream("stream.fail", {"before": 2, "status": 409})]
    assert [stream_signal(s) for s in failed] == [DATA, DATA, EXCEPTION] and failed[-1].status == 409


async def test_the_producer_leaving_ends_the_stream_at_once_with_the_peer_left_error(
    apps: tuple[TestMesh, Platform, Platform],
) -> None:
    mesh, producer, reader = apps
    stream = PostOffice(reader).stream("stream.endless", {"delay": 0.01}, timeout=30)
    await anext(stream)
    await mesh.stop(producer, drain=False)
    rest = [s async for s in stream]
    assert rest[-1].status == 503 and stream_signal(rest[-1]) == EXCEPTION
    assert rest[-1].exception == "PeerLost" and "left" in rest[-1].body["message"]
    assert not reader.streams.readers


async def test_the_reader_leaving_stops_its_producer(apps: tuple[TestMesh, Platform, Platform]) -> None:
    mesh, producer, reader = apps
    stream = PostOffice(reader).stream("stream.endless", {"delay": 0.005})
    await anext(stream)
    await mesh.stop(reader, drain=False)
    await eventually(lambda: streaming.STATE["stopped"] == 1)
    assert not producer.streams.outlets
    del stream


async def test_request_gets_406_and_a_plain_function_streams_its_one_reply(
    apps: tuple[TestMesh, Platform, Platform],
) -> None:
    _, _, reader = apps
    po = PostOffice(reader)
    reply = await po.request("stream.count", {"count": 1}, timeout=5)
    assert reply.status == 406
    [state] = [s async for s in po.stream("stream.state")]
    assert stream_signal(state) is None and state.body["started"] == 0
    [eof] = [s async for s in po.stream("stream.count", {"count": 0})]
    assert stream_signal(eof) == EOF
