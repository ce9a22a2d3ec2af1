"""A stream whose producer is lost before its first segment goes to another instance when it is safe to
retry (docs/protocol/streams.md#failover), in one process (meshkit.testing.TestMesh: the mesh's own code
over the memory connector). After its first segment, a stream is its producer's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from meshkit import FunctionRegistry, Platform, PostOffice, current_platform
from meshkit.core import EOF, EXCEPTION, stream_signal
from meshkit.testing import TestMesh


def producer(
    *, idempotent: bool, ran: list[str], instances: int = 4, max_queue: int | None = None
) -> FunctionRegistry:
    """`stream.slow`: waits `first` seconds, then yields `count` segments naming its app."""
    registry = FunctionRegistry()

    @registry.route("stream.slow", idempotent=idempotent, instances=instances, max_queue=max_queue)
    async def slow(body: dict[str, Any]) -> AsyncIterator[str]:
        name = current_platform().name
        ran.append(name)
        await asyncio.sleep(float(body.get("first", 0.3)))
        for index in range(int(body.get("count", 3))):
            yield f"{name}:{index}"
            await asyncio.sleep(float(body.get("between", 0)))

    return registry


async def two_producers(
    mesh: TestMesh, *, idempotent: bool, ran: list[str]
) -> tuple[Platform, Platform, Platform]:
    reader = await mesh.app("reader", FunctionRegistry())
    a = await mesh.app("prod-a", producer(idempotent=idempotent, ran=ran))
    b = await mesh.app("prod-b", producer(idempotent=idempotent, ran=ran))
    await mesh.until(lambda: len(PostOffice(reader).search("stream.slow")) == 2, "both producers known")
    return reader, a, b


async def busy_one(*apps: Platform) -> Platform:
    for _ in range(2000):
        for app in apps:
            pool = app.pool("stream.slow")
            if pool is not None and pool.busy:
                return app
        await asyncio.sleep(0.001)
    raise AssertionError("no producer took the stream")


async def read_all(reader: Platform, body: dict[str, Any]) -> list[Any]:
    return [s async for s in PostOffice(reader).stream("stream.slow", body, timeout=5)]


async def test_a_safe_stream_whose_producer_dies_before_its_first_segment_is_served_by_the_other() -> None:
    ran: list[str] = []
    async with TestMesh() as mesh:
        reader, a, b = await two_producers(mesh, idempotent=True, ran=ran)
        stream = asyncio.create_task(read_all(reader, {"first": 0.3}))
        victim = await busy_one(a, b)
        survivor = b if victim is a else a
        await mesh.stop(victim, drain=False)  # as SIGKILL: it never sends a segment
        segments = await stream
        assert [s.body for s in segments[:-1]] == [f"{survivor.name}:{i}" for i in range(3)]
        assert stream_signal(segments[-1]) == EOF
        assert sorted(ran) == sorted([victim.name, survivor.name]) and reader.retries == 1
        assert not reader.streams.readers and not reader.streams.unanswered


async def test_a_stream_not_safe_to_retry_fails_fast_and_never_runs_twice() -> None:
    ran: list[str] = []
    async with TestMesh() as mesh:
        reader, a, b = await two_producers(mesh, idempotent=False, ran=ran)
        started = time.monotonic()
        stream = asyncio.create_task(read_all(reader, {"first": 0.3}))
        victim = await busy_one(a, b)
        await mesh.stop(victim, drain=False)
        [failure] = await stream
        assert stream_signal(failure) == EXCEPTION and failure.status == 503
        assert failure.exception == "PeerLost"
        assert time.monotonic() - started < 1.0  # at once, not at the 5 s idle allowance
        assert ran == [victim.name] and reader.retries == 0


async def test_a_safe_stream_is_its_producers_after_the_first_segment() -> None:
    ran: list[str] = []
    async with TestMesh() as mesh:
        reader, a, b = await two_producers(mesh, idempotent=True, ran=ran)
        stream = PostOffice(reader).stream(
            "stream.slow", {"first": 0, "count": 50, "between": 0.05}, timeout=5
        )
        first = await anext(stream)
        victim = a if first.body.startswith(a.name) else b
        await mesh.stop(victim, drain=False)
        rest = [s async for s in stream]
        assert stream_signal(rest[-1]) == EXCEPTION and rest[-1].exception == "PeerLost"
        assert all(s.body.startswith(victim.name) for s in rest[:-1])
        assert ran == [victim.name] and reader.retries == 0


async def test_a_stream_refused_for_overload_goes_to_another_instance_when_safe() -> None:
    ran: list[str] = []
    async with TestMesh() as mesh:
        reader = await mesh.app("reader", FunctionRegistry())
        # one instance and no queue: a second stream while it works is refused with 503
        small = await mesh.app("prod-small", producer(idempotent=True, ran=ran, instances=1, max_queue=0))
        large = await mesh.app("prod-large", producer(idempotent=True, ran=ran, instances=50))
        await mesh.until(lambda: len(PostOffice(reader).search("stream.slow")) == 2, "both producers known")
        streams = await asyncio.gather(*(read_all(reader, {"first": 0.1, "count": 2}) for _ in range(12)))
        assert all(stream_signal(s[-1]) == EOF and len(s) == 3 for s in streams), streams
        by = {s[0].body.partition(":")[0] for s in streams}
        assert by == {small.name, large.name}
        assert reader.retries >= 3  # the streams the small instance refused


async def test_the_caller_may_say_per_stream_whether_it_is_safe_to_retry() -> None:
    async with TestMesh() as mesh:
        for declared, asked, retried in ((False, True, True), (True, False, False)):
            ran: list[str] = []
            reader, a, b = await two_producers(mesh, idempotent=declared, ran=ran)
            po = PostOffice(reader)

            async def read(po: PostOffice, asked: bool) -> list[Any]:
                return [
                    s async for s in po.stream("stream.slow", {"first": 0.3}, timeout=5, idempotent=asked)
                ]

            stream = asyncio.create_task(read(po, asked))
            await mesh.stop(await busy_one(a, b), drain=False)
            segments = await stream
            assert (stream_signal(segments[-1]) == EOF) is retried, segments
            assert len(ran) == (2 if retried else 1)
            for app in (reader, a, b):
                if app.running:
                    await mesh.stop(app)


async def test_a_stream_sent_again_while_its_first_producer_lives_reads_only_the_second() -> None:
    """The way to the first producer broke (its direct link, say) but it lives on and goes on producing, over
    the broker: the stream sent again has a cid of its own, so the reader never mixes the two, and the first
    is told to stop."""
    ran: list[str] = []
    async with TestMesh() as mesh:
        reader, a, b = await two_producers(mesh, idempotent=True, ran=ran)
        stream = asyncio.create_task(read_all(reader, {"first": 0.3, "count": 5}))
        first = await busy_one(a, b)
        second = b if first is a else a
        # what a lost link does: the streams that went that way fail over (meshkit.mesh, Node._link_lost)
        budget = reader.retry_budget
        deposits = sum(budget._requests)
        reader.fail_requests([], "the link broke", streams_with=first.origin)
        assert sum(budget._requests) == deposits  # a retry earns the budget nothing, as for a request
        segments = await stream
        assert [s.body for s in segments[:-1]] == [f"{second.name}:{i}" for i in range(5)], segments
        assert stream_signal(segments[-1]) == EOF and reader.retries == 1
        assert sorted(ran) == sorted([first.name, second.name])
        await mesh.until(lambda: not first.streams.outlets, "the first producer stopped")
        assert not reader.streams.readers and not reader.streams.unanswered


async def test_a_safe_stream_whose_only_producer_lost_its_link_is_taken_again_the_other_way() -> None:
    """The way to the one producer broke, not the producer: with no other instance, the stream goes to it
    again (under a new cid, over the broker), as a request would."""
    ran: list[str] = []
    async with TestMesh() as mesh:
        reader = await mesh.app("reader", FunctionRegistry())
        only = await mesh.app("prod-only", producer(idempotent=True, ran=ran))
        await mesh.until(lambda: PostOffice(reader).exists("stream.slow"), "the producer known")
        stream = asyncio.create_task(read_all(reader, {"first": 0.3, "count": 3}))
        await busy_one(only)
        reader.fail_requests([], "the link broke", streams_with=only.origin)
        segments = await stream
        assert [s.body for s in segments[:-1]] == [f"{only.name}:{i}" for i in range(3)], segments
        assert stream_signal(segments[-1]) == EOF and reader.retries == 1 and ran == [only.name] * 2
        await mesh.until(lambda: not only.streams.outlets, "both executions ended")
