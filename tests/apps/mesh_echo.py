"""Two small apps for tests/mesh/test_mesh_faults.py: a callee with a slow function, and a caller that
reaches it.

``callee`` serves ``mesh.slow`` (public): it prints ``mesh.slow started <mark>`` to its log at once, then
answers after ``seconds`` (header, default 30); and ``mesh.once`` (not safe to retry), which prints
``mesh.once ran <mark>`` and answers after ``seconds`` (default 0). ``caller`` serves nothing itself;
its ``GET /call/{route}`` sends one request through the mesh with ``PostOffice.request(route,
timeout=...)`` and reports the outcome as JSON: ``{status, body | error, elapsed}`` (408 for a timeout,
the AppError's status for a bus error).

    meshkit run tests.apps.mesh_echo:callee --port P -Dcloud.connector=kafka ...
    meshkit run tests.apps.mesh_echo:caller --port Q -Dcloud.connector=kafka ...
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from meshkit import FunctionRegistry, create_app, current_platform
from tests.apps.calling import call

callee_functions = FunctionRegistry()


@callee_functions.route("mesh.slow", instances=4)
async def slow(headers: dict[str, str], body: Any) -> dict[str, Any]:
    print(f"mesh.slow started {headers.get('mark', '-')}", flush=True)
    await asyncio.sleep(float(headers.get("seconds", "30")))
    return {"origin": current_platform().origin, "mark": headers.get("mark")}


@callee_functions.route("mesh.once", instances=8)
async def once(headers: dict[str, str], body: Any) -> dict[str, Any]:
    """Not declared safe to retry: prints ``mesh.once ran <mark>`` each time it runs, so a test can tell
    that no request ran twice."""
    print(f"mesh.once ran {headers.get('mark', '-')}", flush=True)
    await asyncio.sleep(float(headers.get("seconds", "0")))
    return {"origin": current_platform().origin, "mark": headers.get("mark")}


callee = create_app(name="mesh-callee", config_dir=Path(__file__).parent, functions=callee_functions)

caller = create_app(
    name="mesh-caller", personality="WEB", config_dir=Path(__file__).parent, functions=FunctionRegistry()
)


caller.get("/call/{route}")(call)
