"""An app that both serves and calls, for tests/mesh/test_mesh_direct.py: several instances of it, each on
its own transport (`mesh.transport`), call one another by origin.

``peer.echo`` (public, not safe to retry) answers ``{origin, mark}`` after ``seconds`` (header, default 0);
``GET /call/{target}`` sends one request to ``target`` (a route, or ``route@origin``) with
``PostOffice.request`` and reports ``{status, body | error, elapsed}`` (408 for a timeout).

    meshkit run tests.apps.mesh_peer:app --port P -Dcloud.connector=kafka -Dmesh.transport=direct ...
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from meshkit import AppError, FunctionRegistry, PostOffice, create_app, current_platform

functions = FunctionRegistry()


@functions.route("peer.echo", instances=64)
async def echo(headers: dict[str, str], body: Any) -> dict[str, Any]:
    await asyncio.sleep(float(headers.get("seconds", "0")))
    return {"origin": current_platform().origin, "mark": headers.get("mark")}


app = create_app(name="mesh-peer", config_dir=Path(__file__).parent, functions=functions)


@app.get("/call/{target}")
async def call(target: str, timeout: float = 5.0, seconds: float = 0.0, mark: str = "-") -> dict[str, Any]:
    """One request through the mesh; never raises, so the test sees how (and how fast) it ended."""
    started = time.monotonic()
    outcome: dict[str, Any]
    try:
        reply = await PostOffice().request(
            target, headers={"seconds": str(seconds), "mark": mark}, timeout=timeout
        )
        outcome = {"status": reply.status, "body": reply.body}
    except AppError as exc:
        outcome = {"status": exc.status, "error": exc.message}
    except TimeoutError as exc:
        outcome = {"status": 408, "error": str(exc)}
    outcome["elapsed"] = time.monotonic() - started
    return outcome
