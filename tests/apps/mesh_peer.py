"""An app that both serves and calls, for tests/mesh/test_mesh_direct.py: several instances of it, each on
its own transport (`mesh.transport`), call one another by origin.

``peer.echo`` (public, not safe to retry) answers ``{origin, mark}`` after ``seconds`` (header, default 0),
with the size and SHA-256 of a bytes body;
``GET /call/{route}`` sends one request to ``route`` (or ``route@origin``) with
``PostOffice.request`` and reports ``{status, body | error, elapsed}`` (408 for a timeout);
``DELETE`` and ``PUT /routes/peer.extra`` take that extra route away and put it back (a real route change).

    meshkit run tests.apps.mesh_peer:app --port P -Dcloud.connector=kafka -Dmesh.transport=direct ...
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from meshkit import FunctionRegistry, create_app, current_platform
from tests.apps.calling import call

functions = FunctionRegistry()


@functions.route("peer.echo", instances=64)
async def echo(headers: dict[str, str], body: Any) -> dict[str, Any]:
    await asyncio.sleep(float(headers.get("seconds", "0")))
    answer = {"origin": current_platform().origin, "mark": headers.get("mark")}
    if isinstance(body, bytes):
        answer.update(size=len(body), sha=hashlib.sha256(body).hexdigest())
    return answer


app = create_app(name="mesh-peer", config_dir=Path(__file__).parent, functions=functions)


app.get("/call/{route}")(call)


async def _extra(headers: dict[str, str], body: Any) -> str:
    return "extra"


@app.put("/routes/peer.extra")
async def add_extra() -> dict[str, bool]:
    current_platform().register("peer.extra", _extra)
    return {"added": True}


@app.delete("/routes/peer.extra")
async def remove_extra() -> dict[str, bool]:
    await current_platform().release("peer.extra")
    return {"removed": True}
