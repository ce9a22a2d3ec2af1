"""In-process PostOffice.request against the bare floor: an asyncio.Queue + Future echo, no framework."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import IN_FLIGHT, Figure, measure
from meshkit import AppConfig, FunctionRegistry, Platform, PostOffice
from meshkit.core._envelope import reply_event, request_event  # the bus's own, cheapest way to build them

PAYLOAD = b"x" * 200


async def floor_figure(*, awaits: bool = False, envelopes: bool = False) -> Figure:
    """The in-process floor; `awaits`: each worker awaits once before it answers (BENCH.md's "in-process,
    awaiting": the floor for a handler that awaits anything); `envelopes`: the call and the worker each build
    the EventEnvelope a PostOffice.request and its reply are, the way the bus builds them, and nothing else
    (what the API itself costs)."""
    queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()

    async def worker() -> None:
        while True:
            request, future = await queue.get()
            if awaits:
                await asyncio.sleep(0)
            if envelopes:
                request = reply_event(
                    request.reply_to, request.body, None, 200, request.to, request.cid, 0.0, None
                )
            future.set_result(request)

    workers = [asyncio.create_task(worker()) for _ in range(IN_FLIGHT)]
    loop = asyncio.get_running_loop()

    async def call() -> Any:
        future: asyncio.Future[Any] = loop.create_future()
        if envelopes:
            request = request_event("bench.echo", PAYLOAD, {})
            request.reply_to, request.cid = "inbox", "c"
            queue.put_nowait((request, future))
        else:
            queue.put_nowait((PAYLOAD, future))
        return await future

    name = "in-process floor, awaiting" if awaits else "in-process floor"
    try:
        return await measure(f"{name}, 2 envelopes" if envelopes else name, len(PAYLOAD), call)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def meshkit_figures() -> list[Figure]:
    registry = FunctionRegistry()

    @registry.route("bench.echo", instances=IN_FLIGHT)
    async def echo(headers: dict[str, str], body: Any, instance: int) -> Any:
        return body

    @registry.route("bench.echo.awaits", instances=IN_FLIGHT)
    async def echo_awaits(headers: dict[str, str], body: Any, instance: int) -> Any:
        await asyncio.sleep(0)  # suspends once: the reply goes through the inbox, not the inline path
        return body

    platform = Platform(AppConfig.load(argv=[], environ={}), name="bench", functions=registry)
    await platform.start()
    po = PostOffice(platform)

    async def call() -> Any:
        return await po.request("bench.echo", PAYLOAD)

    async def call_awaiting() -> Any:
        return await po.request("bench.echo.awaits", PAYLOAD)

    try:
        return [
            await measure("in-process PostOffice.request", len(PAYLOAD), call),
            await measure("in-process request, handler awaits", len(PAYLOAD), call_awaiting),
        ]
    finally:
        await platform.stop()


async def run() -> list[Figure]:
    floor = await floor_figure()
    awaiting_floor = await floor_figure(awaits=True)
    # the request and its reply alone, in the awaiting floor: the ceiling of any API that returns envelopes
    with_envelopes = await floor_figure(awaits=True, envelopes=True)
    plain, awaiting = await meshkit_figures()
    return [
        floor,
        plain.against(floor),
        awaiting_floor,
        with_envelopes.against(awaiting_floor),
        awaiting.against(awaiting_floor),
    ]
