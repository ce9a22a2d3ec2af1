"""Streaming functions for the stream tests, served in process, across the mesh and over HTTP.

``stream.count`` yields ``count`` segments (body: ``{"count", "size", "delay"}``), each its index as 8
digits padded with ``x`` to ``size`` characters, so a reader can check the order; ``stream.endless`` yields
numbers until it is stopped (``delay`` seconds apart, default 0), counting in ``STATE``; ``stream.fail``
yields ``before`` segments, then raises AppError(``status``); ``stream.quiet`` yields one segment, then
waits ``seconds``; ``stream.written`` writes with an EventStreamWriter; ``stream.state`` (a plain function)
answers ``STATE``, the streams this app is producing and its resident memory in KB.

    meshkit run tests.apps.streaming:app --port P
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from meshkit import AppError, EventStreamWriter, FunctionRegistry, create_app, current_platform

functions = FunctionRegistry()
STATE = {"started": 0, "stopped": 0, "produced": 0, "peak_outstanding": 0}


def segment(index: int, size: int) -> str:
    text = f"{index:08d}"
    return text + "x" * (size - len(text)) if size > len(text) else text


@functions.route("stream.count", instances=8)
async def count(body: dict[str, Any]) -> AsyncIterator[str]:
    delay = float(body.get("delay", 0))
    size = int(body.get("size", 8))
    for index in range(int(body["count"])):
        if delay:
            await asyncio.sleep(delay)
        yield segment(index, size)


@functions.route("stream.endless", instances=8)
async def endless(body: dict[str, Any] | None) -> AsyncIterator[Any]:
    delay = float((body or {}).get("delay", 0))
    size = int((body or {}).get("size", 0))
    STATE["started"] += 1
    try:
        index = 0
        while True:
            if delay:
                await asyncio.sleep(delay)
            yield segment(index, size) if size else index
            index += 1
            STATE["produced"] += 1
            outstanding = max((o.outstanding for o in current_platform().streams.outlets.values()), default=0)
            STATE["peak_outstanding"] = max(STATE["peak_outstanding"], outstanding)
    finally:
        STATE["stopped"] += 1


@functions.route("stream.fail", instances=4)
async def fail(body: dict[str, Any]) -> AsyncIterator[int]:
    for index in range(int(body.get("before", 1))):
        yield index
    raise AppError(int(body.get("status", 500)), str(body.get("message", "the producer failed")))


@functions.route("stream.quiet", instances=4)
async def quiet(body: dict[str, Any]) -> AsyncIterator[str]:
    yield "first"
    await asyncio.sleep(float(body.get("seconds", 30)))
    yield "late"


@functions.route("stream.written", instances=4)
async def written(headers: dict[str, str], body: Any, out: EventStreamWriter) -> None:
    out.first(200, "text/plain")
    await out.write("one")
    await out.write_named("progress", {"done": 1})
    await out.write(b"\x00\x01")
    await out.close({"segments": 3})


@functions.route("stream.state")
async def state(body: Any) -> dict[str, Any]:
    return {
        **STATE,
        "producing": len(current_platform().streams.outlets),
        "rss_kb": _rss_kb(),
    }


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


app = create_app(name="streaming", functions=functions)
