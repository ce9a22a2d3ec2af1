"""Event over HTTP, `po.request(..., endpoint=url)` to an app in its own process, against the http floor.

The floor (BENCH.md): one aiohttp session with 64 connections posting to a FastAPI echo endpoint under one
uvicorn worker with uvloop and httptools (bench/http_floor_app.py). The figure: bench/http_echo_app.py under
`meshkit run` (uvicorn[standard]: uvloop and httptools too), called from a platform in this process through
its `/api/event`. Both callers run on uvloop (asyncio's own loop when uvloop is missing); each server runs
only while its figure is measured. `run` takes the medians of three runs of each, in turns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp

from bench.common import IN_FLIGHT, Figure, measure, median_of, run_async
from bench.processes import served
from meshkit import AppConfig, Platform, PostOffice
from meshkit.devbroker import free_port
from meshkit.http import equip

PAYLOAD = b"x" * 200
OCTET_STREAM = {"content-type": "application/octet-stream"}


@contextlib.contextmanager
def _server(args: list[str], port: int, ready_path: str) -> Iterator[str]:
    """`python -m ARGS...` for the block; yields its base URL once it answers."""
    base = f"http://127.0.0.1:{port}"
    with served(args, base + ready_path):
        yield base


def _floor_server() -> contextlib.AbstractContextManager[str]:
    port = free_port()
    args = ["uvicorn", "bench.http_floor_app:app", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
    args += ["--log-level", "warning", "--no-access-log"]
    return _server(args, port, "/echo")  # a GET there is a 405: up


def _meshkit_server() -> contextlib.AbstractContextManager[str]:
    port = free_port()
    args = ["meshkit.cli", "run", "bench.http_echo_app:app", "--port", str(port), "--log-level", "warning"]
    return _server(args, port, "/livenessprobe")


async def floor_figure(url: str, payload: bytes = PAYLOAD) -> Figure:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        async def call() -> bytes:
            async with session.post(url, data=payload, headers=OCTET_STREAM) as response:
                body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"the http floor answered {response.status}: {body!r}")
            return body

        if await call() != payload:
            raise RuntimeError("the http floor does not echo its payload")
        return await measure("http floor (aiohttp, FastAPI)", len(payload), call)


async def meshkit_figure(url: str) -> Figure:
    platform = Platform(AppConfig.load(argv=[], environ={}), name="bench-http-caller", functions=[])
    equip(platform)  # the Event-over-HTTP client, as in an app
    await platform.start()
    po = PostOffice(platform)

    async def call() -> Any:
        reply = await po.request("bench.echo", PAYLOAD, endpoint=url, timeout=30.0)
        if reply.status != 200:
            raise RuntimeError(f"bench.echo answered {reply.status}: {reply.body!r}")
        return reply.body

    try:
        if await call() != PAYLOAD:
            raise RuntimeError("bench.echo over HTTP does not echo its payload")
        return await measure("http PostOffice.request", len(PAYLOAD), call)
    finally:
        await platform.stop()


def run(repeat: int = 3) -> list[Figure]:
    """`repeat` runs of the floor and of the figure, taken in turns; their medians compared."""
    floors: list[Figure] = []
    figures: list[Figure] = []
    for _ in range(repeat):
        with _floor_server() as base:
            floors.append(run_async(floor_figure(base + "/echo")))
        with _meshkit_server() as base:
            figures.append(run_async(meshkit_figure(base + "/api/event")))
    floor = median_of(floors)
    return [floor, median_of(figures).against(floor)]
