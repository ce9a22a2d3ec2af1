"""Deadlines on the bus: every request carries one, a handler's calls get what is left, expired work
never runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest

from meshkit import CodecError, EventEnvelope, FunctionRegistry, PostOffice, decode, encode
from meshkit.testing import running_platform


def chain(seen: dict[str, float | None]) -> FunctionRegistry:
    """a -> b -> c, each asking for far more time than its caller has; c reports what it was left."""
    registry = FunctionRegistry()

    @registry.route("chain.a")
    async def a(body: Any) -> Any:
        await asyncio.sleep(0.2)  # spends a fifth of the budget first
        return (await PostOffice().request("chain.b", body, timeout=60)).body

    @registry.route("chain.b")
    async def b(body: Any) -> Any:
        seen["b"] = PostOffice().time_left(60)
        return (await PostOffice().request("chain.c", body, timeout=60)).body

    @registry.route("chain.c")
    def c(body: Any) -> Any:  # a plain def, in a thread: its PostOffice reads the context there
        seen["c"] = PostOffice().time_left(60)
        return "done"

    return registry


async def test_a_handler_s_calls_get_at_most_what_its_caller_has_left() -> None:
    seen: dict[str, float | None] = {}
    async with running_platform(chain(seen)) as platform:
        started = time.perf_counter()
        reply = await PostOffice(platform).request("chain.a", timeout=1.0)
        assert reply.body == "done"
    assert seen["b"] is not None and seen["c"] is not None
    # b asked for 60 s but got what was left of the 1 s: at most 0.8 s after a's 0.2 s sleep
    assert 0.5 < seen["b"] <= 0.8 + 0.01, seen
    assert seen["c"] <= seen["b"], seen
    assert time.perf_counter() - started < 1.0


async def test_a_call_whose_caller_s_deadline_passed_is_never_sent() -> None:
    registry = FunctionRegistry()
    ran: list[str] = []

    @registry.route("late.outer")
    async def outer(body: Any) -> Any:
        await asyncio.sleep(0.15)  # past its own caller's 0.1 s
        try:
            await PostOffice().request("late.inner", timeout=5)
        except TimeoutError as exc:
            return str(exc)
        return "sent"

    @registry.route("late.inner")
    async def inner(body: Any) -> Any:
        ran.append("inner")
        return "ran"

    async with running_platform(registry) as platform:
        with pytest.raises(TimeoutError):
            await PostOffice(platform).request("late.outer", timeout=0.1)
        await asyncio.sleep(0.1)  # outer finishes after its caller gave up
        assert ran == []
        # its reply came after the caller stopped waiting: dropped, and counted
        assert platform.late_replies == 1


async def test_an_event_whose_deadline_passed_in_the_queue_is_answered_408_and_never_run() -> None:
    registry = FunctionRegistry()
    ran: list[int] = []

    @registry.route("queue.slow", instances=1)
    async def slow(body: Any) -> Any:
        ran.append(body)
        await asyncio.sleep(0.3)
        return body

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        first = asyncio.create_task(po.request("queue.slow", 1, timeout=2))
        await asyncio.sleep(0.01)
        # waits behind the first, and its caller gives up after 0.1 s: it must never run
        second = await po.request("queue.slow", 2, timeout=0.1, timeout_as_reply=True)
        assert second.status == 408
        assert (await first).body == 1
        await asyncio.sleep(0.05)
        pool = platform.pool("queue.slow")
        assert pool is not None
        assert ran == [1] and pool.expired == 1
        # the 408 the pool answered came after the caller's own timeout: a late reply
        assert platform.late_replies == 1


async def test_a_drop_and_forget_event_that_arrives_expired_is_never_run() -> None:
    registry = FunctionRegistry()
    ran: list[Any] = []

    @registry.route("expired.sink")
    async def sink(body: Any) -> None:
        ran.append(body)

    async with running_platform(registry) as platform:
        event = EventEnvelope("expired.sink", "stale")
        event.deadline = time.perf_counter() - 0.01
        platform.dispatch(event, external=True)
        await PostOffice(platform).send("expired.sink", "fresh")
        await asyncio.sleep(0.02)
        assert ran == ["fresh"]
        assert platform.pool("expired.sink").expired == 1  # type: ignore[union-attr]


def test_the_deadline_travels_as_ttl_the_milliseconds_left() -> None:
    event = EventEnvelope("hello.world", "hi")
    event.deadline = time.perf_counter() + 1.5
    raw = msgpack.unpackb(encode(event))
    assert 1400 <= raw["ttl"] <= 1500
    received = decode(encode(event))
    left = received.time_left()
    assert left is not None and 1.3 < left <= 1.5
    # no deadline: no ttl key at all, as before
    assert "ttl" not in msgpack.unpackb(encode(EventEnvelope("hello.world")))


@pytest.mark.parametrize("ttl", ["100", 1.5, True, [1]])
def test_a_ttl_that_is_not_an_integer_is_refused(ttl: Any) -> None:
    data = msgpack.packb({"id": "x", "to": "hello.world", "ttl": ttl})
    with pytest.raises(CodecError, match="ttl"):
        decode(data)


@pytest.mark.parametrize(("ttl", "left"), [(-5, 0.0), (10**15, 86_400.0)])
def test_a_ttl_out_of_range_is_clamped(ttl: int, left: float) -> None:
    event = decode(msgpack.packb({"id": "x", "to": "hello.world", "ttl": ttl}))
    remaining = event.time_left()
    assert remaining is not None and abs(remaining - left) < 0.5


async def test_a_waiting_handler_s_deadline_never_leaks_to_other_tasks() -> None:
    registry = FunctionRegistry()
    gates = [asyncio.Event(), asyncio.Event()]

    @registry.route("leak.wait", instances=1)
    async def wait(body: int) -> int:
        await gates[body].wait()
        return body

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        first = asyncio.create_task(po.request("leak.wait", 0, timeout=2))  # runs inline, then waits
        await asyncio.sleep(0.01)
        second = asyncio.create_task(po.request("leak.wait", 1, timeout=2))  # queued: a task of its own
        await asyncio.sleep(0.01)
        assert po.time_left(60) == 60
        gates[0].set()
        assert (await first).body == 0
        await asyncio.sleep(0.01)  # the second runs now, in its task, and waits
        assert platform.pool("leak.wait").busy == 1  # type: ignore[union-attr]
        assert po.time_left(60) == 60  # out here, nobody's deadline applies
        gates[1].set()
        assert (await second).body == 1
