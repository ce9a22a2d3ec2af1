"""The PostOffice: send, request, broadcast, request_all, exists, search and the sync bridge."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshkit import AppError, EventEnvelope, FunctionRegistry, PostOffice
from meshkit.testing import running_platform

registry = FunctionRegistry()
received: list[Any] = []


@registry.route("demo.echo", instances=20)
async def echo(headers: dict[str, str], body: Any, instance: int) -> Any:
    return body


@registry.route("demo.sleep", instances=50)
async def sleeper(headers: dict[str, str], body: float, instance: int) -> float:
    await asyncio.sleep(body)
    return body


@registry.route("demo.collect")
async def collect(body: Any) -> None:
    received.append(body)


@registry.route("demo.sync.caller")
def sync_caller(headers: dict[str, str], body: Any, instance: int) -> Any:
    """A plain def handler calling another function through the sync bridge."""
    reply = PostOffice().sync.request("demo.echo", {"via": "bridge", "body": body})
    return reply.body


async def test_request_returns_the_reply_with_timing() -> None:
    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("demo.echo", {"x": 1}, {"h": "v"})
    assert reply.status == 200 and reply.body == {"x": 1}
    assert reply.sender == "demo.echo"
    assert reply.round_trip is not None and reply.exec_time is not None


async def test_request_accepts_a_prepared_envelope() -> None:
    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request(EventEnvelope("demo.echo", "from an envelope"))
    assert reply.body == "from an envelope"


async def test_send_is_drop_and_forget() -> None:
    received.clear()
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        assert await po.send("demo.collect", "one") is None
        await po.request("demo.collect", "two")  # one instance, FIFO: "one" ran first
    assert received == ["one", "two"]


async def test_unknown_routes_are_a_404_app_error() -> None:
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        for call in (po.send("no.such.route"), po.request("no.such.route"), po.broadcast("no.such.route")):
            with pytest.raises(AppError) as error:
                await call
            assert error.value.status == 404 and "no.such.route" in error.value.message


async def test_a_request_without_a_reply_in_time_raises_timeout_error() -> None:
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        with pytest.raises(TimeoutError, match=r"demo\.sleep timeout for 0\.1 s"):
            await po.request("demo.sleep", 1.0, timeout=0.1)
        as_reply = await po.request("demo.sleep", 1.0, timeout=0.1, timeout_as_reply=True)
        assert as_reply.status == 408 and "timeout" in as_reply.body
        # a late reply after a timeout is dropped quietly and the next request works
        assert (await po.request("demo.echo", "next")).body == "next"


async def test_concurrent_requests_from_one_caller_do_not_serialise() -> None:
    functions = FunctionRegistry()
    arrived: list[int] = []
    everyone = asyncio.Event()

    @functions.route("demo.rendezvous", instances=50)
    async def rendezvous(body: int) -> int:
        arrived.append(body)
        if len(arrived) == 20:
            everyone.set()
        await everyone.wait()  # run one after another, the first would wait here until its timeout
        return body

    async with running_platform(functions) as platform:
        po = PostOffice(platform)
        replies = await asyncio.gather(*(po.request("demo.rendezvous", n, timeout=5) for n in range(20)))
    assert all(r.status == 200 for r in replies)
    assert sorted(r.body for r in replies) == list(range(20))


async def test_request_all_returns_what_arrived_in_time() -> None:
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        events = [
            EventEnvelope("demo.echo", "fast"),
            EventEnvelope("demo.sleep", 2.0),
            EventEnvelope("demo.sleep", 0.01),
        ]
        replies = await po.request_all(events, timeout=0.5)
        assert [r.body for r in replies] == ["fast", 0.01]
        with pytest.raises(AppError):  # an unknown route is a mistake, not a late reply
            await po.request_all(["demo.echo", "no.such.route"], timeout=0.5)


async def test_broadcast_reaches_the_local_function() -> None:
    received.clear()
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        await po.broadcast("demo.collect", "everyone")
        await po.request("demo.collect", "after")
    assert received == ["everyone", "after"]


async def test_exists_and_search() -> None:
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        assert po.exists("demo.echo") and po.exists("demo.echo", "demo.sleep")
        assert not po.exists("demo.echo", "no.such.route") and not po.exists()
        assert po.search("demo.echo") == [platform.origin]
        assert po.search("no.such.route") == []


async def test_a_plain_def_handler_calls_other_functions_through_the_sync_bridge() -> None:
    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("demo.sync.caller", 7)
    assert reply.status == 200 and reply.body == {"via": "bridge", "body": 7}


async def test_the_sync_bridge_refuses_to_block_the_event_loop() -> None:
    async with running_platform(registry) as platform:
        with pytest.raises(RuntimeError, match=r"use 'await po\.request"):
            PostOffice(platform).sync.request("demo.echo", 1)


async def test_the_default_post_office_needs_a_running_platform() -> None:
    with pytest.raises(RuntimeError, match="No meshkit platform is running"):
        PostOffice()
    async with running_platform(registry) as platform:
        assert PostOffice().platform is platform


async def test_a_request_to_a_function_here_leaves_nothing_pending_and_fails_503_at_stop() -> None:
    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        replies = await asyncio.gather(*(po.request("demo.sleep", 0.01) for _ in range(100)))
        assert {r.status for r in replies} == {200}
        assert not platform.replies.local and not platform.replies.futures
        with pytest.raises(TimeoutError):
            await po.request("demo.sleep", 0.5, timeout=0.05)
        assert not platform.replies.local
        waiting = asyncio.create_task(po.request("demo.sleep", 5.0, timeout=10))
        await asyncio.sleep(0.05)
        assert len(platform.replies.local) == 1
    with pytest.raises(AppError) as stopped:
        await waiting
    assert stopped.value.status == 503
