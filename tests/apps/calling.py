"""`GET /call/{route}` for the test apps that call through the mesh (mesh_echo's caller, mesh_peer)."""

from __future__ import annotations

import time
from typing import Any

from meshkit import AppError, PostOffice


async def call(
    route: str, timeout: float = 5.0, seconds: float = 0.0, mark: str = "-", endpoint: str | None = None
) -> dict[str, Any]:
    """One request through the mesh (`route`, or `route@origin`), or to `endpoint` over HTTP; never
    raises, so the test sees how (and how fast) it ended: `{status, body | error, elapsed}`, 408 for a
    timeout."""
    started = time.monotonic()
    outcome: dict[str, Any]
    try:
        reply = await PostOffice().request(
            route, headers={"seconds": str(seconds), "mark": mark}, timeout=timeout, endpoint=endpoint
        )
        outcome = {"status": reply.status, "body": reply.body}
    except AppError as exc:
        outcome = {"status": exc.status, "error": exc.message}
    except TimeoutError as exc:
        outcome = {"status": 408, "error": str(exc)}
    outcome["elapsed"] = time.monotonic() - started
    return outcome
