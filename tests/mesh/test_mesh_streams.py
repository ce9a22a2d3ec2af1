"""Event streams across a real mesh: a producer app in a process of its own, a reader platform in the test,
a presence monitor and the Tansu broker between them. Segments travel to the reader's virtual topic; credit
and cancel travel back to the producer's.

The same behaviours in one process (TestMesh): tests/mesh/test_streams_in_mesh.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from meshkit import AppConfig, Platform, PostOffice
from meshkit.connectors import make_connector
from meshkit.core import DATA, EOF, EXCEPTION, stream_signal
from meshkit.devbroker import DevBroker
from meshkit.mesh import join_mesh
from tests.support.eventually import eventually
from tests.support.kafka_broker import _require_tansu
from tests.support.mesh_fixtures import Mesh, Node

pytestmark = pytest.mark.kafka

STREAMING_APP = "tests.apps.streaming:app"
WINDOW = 32


@pytest.fixture(scope="module")
def producing_mesh() -> Iterator[tuple[Mesh, Node, Node]]:
    """A broker of this module's own (Tansu slows as its log grows), a monitor, the streaming app."""
    _require_tansu()
    with DevBroker() as broker, Mesh(broker) as mesh:
        monitor = mesh.monitor()
        producer = mesh.app(STREAMING_APP)
        yield mesh, monitor, producer


async def join(mesh: Mesh, monitor: Node, name: str = "reader") -> Platform:
    config = AppConfig.load(
        argv=[],
        environ={},
        overrides={
            "cloud.connector": "kafka",
            "bootstrap.servers": mesh.broker.bootstrap,
            "presence.url": monitor.presence_url,
            "connector.watchdog.exit.after": "0",
            "stream.window": str(WINDOW),
        },
    )
    platform = Platform(config, name=name, functions=[])
    await platform.start()
    try:
        await join_mesh(platform, make_connector(config))
        po = PostOffice(platform)
        await eventually(lambda: po.exists("stream.count", "stream.state"), timeout=20)
    except BaseException:
        await platform.stop()
        raise
    return platform


@pytest.fixture
async def reader(producing_mesh: tuple[Mesh, Node, Node]) -> AsyncIterator[Platform]:
    mesh, monitor, _ = producing_mesh
    platform = await join(mesh, monitor)
    try:
        yield platform
    finally:
        await platform.stop()


async def state(po: PostOffice) -> dict[str, Any]:
    reply = await po.request("stream.state", timeout=5)
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


async def test_ten_thousand_segments_in_order_over_the_broker(reader: Platform) -> None:
    po = PostOffice(reader)
    bodies = [b async for b in po.stream("stream.count", {"count": 10_000, "size": 200}, timeout=10).data()]
    assert len(bodies) == 10_000
    assert [int(b[:8]) for b in bodies] == list(range(10_000)) and all(len(b) == 200 for b in bodies)


async def test_segments_over_64_kb_arrive_whole_and_in_order(reader: Platform) -> None:
    po = PostOffice(reader)
    data = [b async for b in po.stream("stream.count", {"count": 6, "size": 200_000}, timeout=10).data()]
    assert [len(d) for d in data] == [200_000] * 6 and [int(d[:8]) for d in data] == list(range(6))


async def test_breaking_off_stops_the_producer_across_the_broker(reader: Platform) -> None:
    po = PostOffice(reader)
    before = await state(po)
    seen = 0
    async for _ in po.stream("stream.endless", timeout=10):
        seen += 1
        if seen == 300:
            break

    async def stopped() -> bool:
        now = await state(po)
        return now["stopped"] == before["stopped"] + 1 and now["producing"] == 0

    await eventually(stopped, timeout=10, what="the producer stopped")
    assert (await state(po))["produced"] - before["produced"] <= seen + WINDOW


async def test_idle_timeout_and_a_producer_error_end_in_band(reader: Platform) -> None:
    po = PostOffice(reader)
    started = time.monotonic()
    quiet = [s async for s in po.stream("stream.quiet", {"seconds": 30}, timeout=1)]
    assert [stream_signal(s) for s in quiet] == [DATA, EXCEPTION] and quiet[-1].status == 408
    assert time.monotonic() - started < 5

    async def quiet_stopped() -> bool:
        return (await state(po))["producing"] == 0

    await eventually(quiet_stopped, timeout=10, what="the quiet producer stopped")
    failed = [s async for s in po.stream("stream.fail", {"before": 3, "status": 422, "message": "no"})]
    assert [stream_signal(s) for s in failed] == [DATA] * 3 + [EXCEPTION]
    assert failed[-1].status == 422 and failed[-1].body == {"type": "error", "status": 422, "message": "no"}


async def test_a_slow_reader_keeps_the_producer_within_its_window_and_its_memory_flat(
    reader: Platform,
) -> None:
    po = PostOffice(reader)
    before = await state(po)
    stream = po.stream("stream.endless", {"size": 65_536}, timeout=10)
    await anext(stream)
    await asyncio.sleep(1.0)  # the reader takes nothing: the producer fills one window and waits
    paused = await state(po)
    for _ in range(150):  # 150 x 64 KB = 9.8 MB through, read slowly
        await anext(stream)
        await asyncio.sleep(0.002)
    after = await state(po)
    await stream.aclose()
    assert paused["produced"] - before["produced"] <= 1 + WINDOW
    assert after["peak_outstanding"] <= WINDOW
    assert after["produced"] - before["produced"] <= 151 + WINDOW
    # a window of 64 KB segments is 2 MB: the producer holds at most that, plus its client's buffers
    assert after["rss_kb"] - paused["rss_kb"] < 8 * 1024


async def test_the_producer_killed_ends_the_stream_at_once_with_the_peer_left_error(
    producing_mesh: tuple[Mesh, Node, Node], reader: Platform
) -> None:
    mesh, _, _ = producing_mesh
    doomed = mesh.app(STREAMING_APP)
    po = PostOffice(reader)
    await eventually(lambda: doomed.origin in po.search("stream.endless"), timeout=20)
    stream = po.stream(f"stream.endless@{doomed.origin}", {"delay": 0.01}, timeout=30)  # that instance
    assert stream_signal(await anext(stream)) == DATA
    killed_at = mesh.kill(doomed)
    rest = [s async for s in stream]
    took = time.monotonic() - killed_at
    assert rest[-1].status == 503 and rest[-1].exception == "PeerLost"
    assert took < 5, f"the stream ended {took:.2f} s after the kill"


async def test_the_reader_leaving_the_mesh_stops_the_producer(
    producing_mesh: tuple[Mesh, Node, Node],
) -> None:
    mesh, monitor, _ = producing_mesh
    leaving = await join(mesh, monitor, "leaving-reader")
    observer = await join(mesh, monitor, "observer")
    try:
        po = PostOffice(observer)
        before = await state(po)
        stream = PostOffice(leaving).stream("stream.endless", {"delay": 0.01}, timeout=30)
        await anext(stream)
        await leaving.stop()

        async def stopped() -> bool:
            now = await state(po)
            return now["stopped"] >= before["stopped"] + 1 and now["producing"] == 0

        await eventually(stopped, timeout=10, what="the producer of the reader that left stopped")
        del stream
    finally:
        await leaving.stop()
        await observer.stop()


async def test_a_safe_stream_whose_producer_is_killed_before_its_first_segment_comes_from_the_other(
    producing_mesh: tuple[Mesh, Node, Node], reader: Platform
) -> None:
    """docs/protocol/streams.md#failover, with real processes: SIGKILL before the first segment."""
    mesh, _, _ = producing_mesh
    first, second = mesh.app(LATE_APP), mesh.app(LATE_APP)
    po = PostOffice(reader)
    try:
        await eventually(lambda: len(po.search("stream.late")) == 2, timeout=20)
        stream = asyncio.create_task(_read(po.stream("stream.late", {"first": 1.5}, timeout=10)))

        async def producer() -> Node | None:
            for node in (first, second):
                reply = await po.request(f"late.producing@{node.origin}", timeout=5)
                if reply.body == 1:
                    return node
            return None

        doomed = await eventually(producer, timeout=5, what="one instance producing the stream")
        assert isinstance(doomed, Node)
        survivor = second if doomed is first else first
        mesh.kill(doomed)
        segments = await stream
        assert [s.body for s in segments[:-1]] == [f"{survivor.origin}:{i}" for i in range(3)], segments
        assert stream_signal(segments[-1]) == EOF and reader.retries == 1
    finally:
        for node in (first, second):
            node.process.stop()


LATE_APP = "tests.apps.late_streams:app"


async def _read(stream: Any) -> list[Any]:
    return [s async for s in stream]
