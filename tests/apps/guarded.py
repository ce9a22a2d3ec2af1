"""An app whose route takes calls only from one app, for tests/mesh/test_mesh_access.py.

``guarded.secret`` answers ``"secret"`` and takes calls only from
``mesh-peer`` (tests/apps/mesh_peer.py); ``guarded.open`` takes calls from anyone.

    meshkit run tests.apps.guarded:app --port P -Dcloud.connector=kafka ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshkit import FunctionRegistry, create_app

functions = FunctionRegistry()


@functions.route("guarded.secret", instances=8, allow=["mesh-peer"])
async def secret(headers: dict[str, str], body: Any) -> str:
    return "secret"


@functions.route("guarded.open", instances=8)
async def open_route(headers: dict[str, str], body: Any) -> str:
    return "open"


app = create_app(name="guarded", config_dir=Path(__file__).parent, functions=functions)
