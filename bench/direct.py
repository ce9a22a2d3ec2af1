"""Mesh PostOffice.request over the direct path (`mesh.transport=direct`) against the HTTP floor, at 200 B,
10 KB and 200 KB (`python -m bench --only direct`).

The echo app runs in its own process, the caller in this one, both on the direct path with its default
carrier (framed TCP), on a fresh broker with a monitor (the broker still carries the joins); measured once
their link is up. The floor is the
HTTP floor of bench.event_http (aiohttp posting to one uvicorn worker) with the same payload. Then, from
outside, the REST example's `/api/pojo/mesh/1` with both examples on the direct path against its
`/api/pojo/http/1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from bench.common import Figure, measure, median_of, run_async
from bench.event_http import _floor_server, floor_figure
from bench.kafka_floor import phase_broker
from bench.mesh import _process, _until, mesh_settings
from meshkit import AppConfig, Platform, PostOffice
from meshkit.connectors import make_connector
from meshkit.devbroker import free_port
from meshkit.mesh import join_mesh

PAYLOADS = (200, 10 * 1024, 200 * 1024)


@contextlib.asynccontextmanager
async def direct_mesh(bootstrap: str | None = None) -> AsyncIterator[PostOffice]:
    """A fresh broker, a monitor, the echo app and a caller here, linked directly."""
    with phase_broker(bootstrap) as servers:
        monitor_port = free_port()
        common = {**mesh_settings(servers, monitor_port), "cloud.connector": "kafka"}
        direct = {**common, "mesh.transport": "direct"}
        with (
            _process("presence_server.main:app", monitor_port, common),
            _process("bench.echo_app:app", free_port(), direct),
        ):
            # the caller serves no HTTP; it takes framed TCP links on a free port, as the echo app does
            config = AppConfig.load(argv=[], environ={}, overrides=direct)
            platform = Platform(config, name="bench-caller", functions=[])
            await platform.start()
            try:
                node = await join_mesh(platform, make_connector(config))
                po = PostOffice(platform)
                await _until(lambda: po.exists("bench.echo"), 20.0)
                await _until(lambda: bool(node.direct.links), 20.0)
                yield po
            finally:
                await platform.stop()


async def direct_figure(payload_bytes: int, bootstrap: str | None = None) -> Figure:
    payload = os.urandom(payload_bytes)

    async def call(po: PostOffice) -> None:
        reply = await po.request("bench.echo", payload, timeout=10.0)
        if reply.status != 200 or reply.body != payload:
            raise RuntimeError(f"bench.echo answered {reply.status}")

    async with direct_mesh(bootstrap) as po:
        return await measure("mesh PostOffice.request, direct", payload_bytes, lambda: call(po))


async def rest_example_figures(bootstrap: str | None = None) -> list[Figure]:
    """From outside, with both examples on the direct path: `GET /api/pojo/mesh/1` on the REST example
    against `GET /api/pojo/http/1` (the same call as Event over HTTP to the lambda example)."""
    import aiohttp

    with phase_broker(bootstrap) as servers:
        monitor_port, lambda_port, rest_port = free_port(), free_port(), free_port()
        common = {**mesh_settings(servers, monitor_port), "cloud.connector": "kafka"}
        direct = {**common, "mesh.transport": "direct"}
        endpoint = {"lambda.example.endpoint": f"http://127.0.0.1:{lambda_port}/api/event"}
        with (
            _process("presence_server.main:app", monitor_port, common),
            _process("example_services.lambda_example.main:app", lambda_port, direct),
            _process("example_services.rest_example.main:app", rest_port, {**direct, **endpoint}),
        ):
            base = f"http://127.0.0.1:{rest_port}"
            async with aiohttp.ClientSession() as session:

                async def linked() -> bool:
                    async with session.get(base + "/info/routes") as response:
                        nodes = (await response.json())["routing"]["nodes"].values()
                    return any(node.get("path") == "direct" for node in nodes)

                deadline = asyncio.get_running_loop().time() + 20
                while not await linked():
                    if asyncio.get_running_loop().time() > deadline:
                        raise RuntimeError("the examples did not link directly within 20 s")
                    await asyncio.sleep(0.1)

                def getter(path: str) -> Callable[[], Awaitable[object]]:
                    async def call() -> object:
                        async with session.get(base + path) as response:
                            if response.status != 200:
                                raise RuntimeError(f"{path} answered {response.status}")
                            return await response.read()

                    return call

                http = await measure("REST example /api/pojo/http/1", 0, getter("/api/pojo/http/1"))
                mesh = await measure("REST example /api/pojo/mesh/1, direct", 0, getter("/api/pojo/mesh/1"))
    return [http, mesh.against(http)]


def run(payloads: tuple[int, ...] = PAYLOADS, repeat: int = 3, bootstrap: str | None = None) -> list[Figure]:
    """For each payload, `repeat` runs of the HTTP floor and of the direct path, in turns; medians."""
    figures: list[Figure] = []
    for size in payloads:
        floors: list[Figure] = []
        directs: list[Figure] = []
        payload = os.urandom(size)
        for _ in range(repeat):
            with _floor_server() as base:
                floors.append(run_async(floor_figure(base + "/echo", payload)))
            directs.append(run_async(direct_figure(size, bootstrap)))
        floor = median_of(floors)
        figures += [floor, median_of(directs).against(floor)]
    figures += run_async(rest_example_figures(bootstrap))
    return figures


if __name__ == "__main__":
    import sys

    from bench.common import report

    report(run(), "--json" in sys.argv)
