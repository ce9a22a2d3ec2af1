"""Event over HTTP, `po.request(..., endpoint=url)` to an app in its own process, against the http floor.

The floor (BENCH.md): one aiohttp session with 64 connections posting to a FastAPI echo endpoint under one
uvicorn worker with uvloop and httptools (bench/http_floor_app.py). The figure: bench/http_echo_app.py under
`meshkit run` (uvicorn[standard]: uvloop and httptools too), called from a platform in this process through
its `/api/event`. Both callers run on uvloop (asyncio's own loop when uvloop is missing). Both servers run at
once and are measured interleaved (bench.common.measure_interleaved): one after the other could not resolve
the target's 15% on a shared machine. `run` takes the medians of three such turns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp

from bench.common import IN_FLIGHT, Figure, measure, measure_interleaved, median_of, run_async
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


FLOOR = "http floor (aiohttp, FastAPI)"
FIGURE = "http PostOffice.request"


async def interleaved_figures(floor_url: str, event_url: str) -> dict[str, Figure]:
    """The floor and the figure with both servers up, measured interleaved (bench.common)."""
    platform = Platform(AppConfig.load(argv=[], environ={}), name="bench-http-caller", functions=[])
    equip(platform)  # the Event-over-HTTP client, as in an app
    await platform.start()
    po = PostOffice(platform)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

            async def floor_call() -> None:
                async with session.post(floor_url, data=PAYLOAD, headers=OCTET_STREAM) as response:
                    body = await response.read()
                if response.status != 200 or body != PAYLOAD:
                    raise RuntimeError(f"the http floor answered {response.status}: {body[:80]!r}")

            async def event_call() -> None:
                reply = await po.request("bench.echo", PAYLOAD, endpoint=event_url, timeout=30.0)
                if reply.status != 200 or reply.body != PAYLOAD:
                    raise RuntimeError(f"bench.echo answered {reply.status}: {reply.body!r}")

            return await measure_interleaved({FLOOR: floor_call, FIGURE: event_call}, len(PAYLOAD))
    finally:
        await platform.stop()


def run(repeat: int = 3) -> list[Figure]:
    """`repeat` turns, both servers up in each, floor and figure measured interleaved; medians compared."""
    floors: list[Figure] = []
    figures: list[Figure] = []
    for _ in range(repeat):
        with _floor_server() as floor_base, _meshkit_server() as meshkit_base:
            measured = run_async(interleaved_figures(floor_base + "/echo", meshkit_base + "/api/event"))
        floors.append(measured[FLOOR])
        figures.append(measured[FIGURE])
    floor = median_of(floors)
    return [floor, median_of(figures).against(floor)]
