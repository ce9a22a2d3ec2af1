"""`GET /call/{route}` for the test apps that call through the mesh (mesh_echo's caller, mesh_peer)."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from meshkit import AppError, PostOffice


async def call(
    route: str,
    timeout: float = 5.0,
    seconds: float = 0.0,
    mark: str = "-",
    endpoint: str | None = None,
    size: int = 0,
) -> dict[str, Any]:
    """One request through the mesh (`route`, or `route@origin`), or to `endpoint` over HTTP, with `size`
    random bytes as its body (their SHA-256 in `sent`); never raises, so the test sees how (and how fast)
    it ended: `{status, body | error, elapsed}`, 408 for a timeout."""
    body = os.urandom(size) if size else None
    started = time.monotonic()
    outcome: dict[str, Any] = {"sent": hashlib.sha256(body).hexdigest()} if body else {}
    try:
        reply = await PostOffice().request(
            route, body, {"seconds": str(seconds), "mark": mark}, timeout=timeout, endpoint=endpoint
        )
        outcome.update(status=reply.status, body=reply.body)
    except AppError as exc:
        outcome.update(status=exc.status, error=exc.message)
    except TimeoutError as exc:
        outcome.update(status=408, error=str(exc))
    outcome["elapsed"] = time.monotonic() - started
    return outcome
