"""`uvicorn presence_server.main:app --port 8080`: the presence monitor.

It hands each app instance its virtual topic over the websocket `/ws/presence/{origin}`, shares its view of
the mesh with the other monitors through `service.monitor` partition 0, and tells each closed user group
when an app leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket

from meshkit import AppError, FunctionRegistry, install, load_config
from meshkit.connectors import make_connector
from meshkit.mesh import HEALTH_ROUTE, mesh_settings
from meshkit.observe import add_gauge
from presence_server._monitor import PresenceMonitor
from presence_server.dashboard import Dashboard


def create_monitor_app(
    config_dir: str | Path | None = None, properties: dict[str, str] | None = None
) -> FastAPI:
    config = load_config(config_dir or Path(__file__).parent, properties)
    layout, _, groups = mesh_settings(config)
    monitor: PresenceMonitor | None = None
    functions = FunctionRegistry()
    dashboard = Dashboard()  # the page at /, its data at /api/mesh

    @functions.route(HEALTH_ROUTE, private=True)
    async def connector_health(headers: dict[str, str], body: Any, instance: int) -> Any:
        if monitor is None:
            raise AppError(503, "Presence monitor not started")
        if headers.get("type") == "info":
            return {"service": monitor.connector.name, "href": monitor.connector.href, "topics": "on-demand"}
        took = await monitor.loopback()
        return f"Loopback test took {took:.0f} ms; System contains {len(await monitor.mesh_topics())} topics"

    async def additional_info() -> dict[str, Any]:
        return await monitor.additional_info() if monitor is not None else {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal monitor
        platform = app.state.platform
        monitor = PresenceMonitor(platform, make_connector(config), layout, groups)
        await monitor.start()
        await dashboard.start(monitor)
        try:
            yield
        finally:
            await dashboard.stop()
            await monitor.stop()

    app = FastAPI(title="presence-monitor", lifespan=lifespan)
    install(
        app,
        config=config,
        personality="RESOURCES",
        functions=functions,
        additional_info=additional_info,
        join_mesh=False,
    )
    add_gauge(
        app,
        "meshkit_presence_connections",
        "App instances in the mesh as this monitor sees them",
        lambda: len(monitor.state.connections) if monitor is not None else 0,
    )
    app.include_router(dashboard.router)

    @app.websocket("/ws/presence/{origin}")
    async def presence(websocket: WebSocket, origin: str) -> None:
        if monitor is None:
            await websocket.close(1013, "monitor not ready")
            return
        await monitor.serve(websocket, origin)

    return app


app = create_monitor_app()
