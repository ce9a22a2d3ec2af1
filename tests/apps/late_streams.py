"""A stream safe to retry whose first segment comes late, for the stream failover tests across a real mesh.

``stream.late`` (idempotent) waits ``first`` seconds, then yields ``count`` segments, each naming this app
instance's origin; ``late.producing`` answers how many streams this instance is producing now.

    meshkit run tests.apps.late_streams:app --port P
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from meshkit import FunctionRegistry, create_app, current_platform

functions = FunctionRegistry()


@functions.route("stream.late", idempotent=True, instances=8)
async def late(body: dict[str, Any]) -> AsyncIterator[str]:
    await asyncio.sleep(float(body.get("first", 1.0)))
    for index in range(int(body.get("count", 3))):
        yield f"{current_platform().origin}:{index}"


@functions.route("late.producing")
async def producing(body: Any) -> int:
    return len(current_platform().streams.outlets)


app = create_app(name="late-streams", functions=functions)
