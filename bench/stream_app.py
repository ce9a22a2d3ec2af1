"""The app the streams benchmark reads (bench/streams.py): `bench.segments` streams `count` segments of
`size` characters.

No `cloud.connector` here: bench/streams.py gives `-Dcloud.connector=kafka` for the mesh and `none` for
Event over HTTP (a `create_app(properties=...)` value would win over `-D`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from meshkit import FunctionRegistry, create_app

functions = FunctionRegistry()


@functions.route("bench.segments", instances=8)
async def segments(body: dict[str, Any]) -> AsyncIterator[str]:
    """An async generator function is a streaming function: one segment a `yield`, backpressure automatic."""
    chunk = "x" * body["size"]
    for _ in range(body["count"]):
        yield chunk


app = create_app(name="bench-streams", functions=functions)
