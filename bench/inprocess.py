"""In-process PostOffice.request against the bare floor: an asyncio.Queue + Future echo, no framework."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import IN_FLIGHT, Figure, measure
from meshkit import AppConfig, FunctionRegistry, Platform, PostOffice

PAYLOAD = b"x" * 200


async def floor_figure(*, awaits: bool = False) -> Figure:
    """The in-process floor; `awaits`: each worker awaits once before it answers (BENCH.md's "in-process,
    awaiting": the floor for a handler that awaits anything)."""
    queue: asyncio.Queue[tuple[bytes, asyncio.Future[bytes]]] = asyncio.Queue()

    async def worker() -> None:
        while True:
            body, future = await queue.get()
            if awaits:
                await asyncio.sleep(0)
            future.set_result(body)

    workers = [asyncio.create_task(worker()) for _ in range(IN_FLIGHT)]
    loop = asyncio.get_running_loop()

    async def call() -> bytes:
        future: asyncio.Future[bytes] = loop.create_future()
        queue.put_nowait((PAYLOAD, future))
        return await future

    try:
        return await measure(
            "in-process floor, awaiting" if awaits else "in-process floor", len(PAYLOAD), call
        )
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
    plain, awaiting = await meshkit_figures()
    return [floor, plain.against(floor), awaiting_floor, awaiting.against(awaiting_floor)]
