"""The FastAPI side: create_app / install, Event over HTTP (`/api/event` and its client, streams as SSE),
actuators, health.

This is where an app is assembled: the platform (meshkit.core), its observers (meshkit.observe), its
connector (meshkit.connectors) and its membership of the mesh (meshkit.mesh).
"""

from __future__ import annotations

import typing as _typing

from meshkit.http._actuators import AdditionalInfo, actuator_router, routing_table
from meshkit.http._app import create_app, equip, install, load_config
from meshkit.http._client import EventOverHttp
from meshkit.http._health import HealthMonitor
from meshkit.http._server import event_router
from meshkit.http._streaming import sse_response

if _typing.TYPE_CHECKING:  # annotations only, not names of this package
    from collections.abc import Mapping
    from typing import Any


def serve(
    app: str, *, host: str, port: int, log_level: str = "info", tls: Mapping[str, Any] | None = None
) -> None:
    """Run `app` ("module:attribute") under uvicorn; the first SIGTERM/SIGINT drains it before HTTP stops.
    `tls`: uvicorn's ssl_* settings from meshkit.security.server_tls (HTTPS and WSS)."""
    from meshkit.http._serving import serve as run  # uvicorn: loaded by the one process that serves

    run(app, host=host, port=port, log_level=log_level, tls=tls)


__all__ = [
    "AdditionalInfo",
    "EventOverHttp",
    "HealthMonitor",
    "actuator_router",
    "create_app",
    "equip",
    "event_router",
    "install",
    "load_config",
    "routing_table",
    "serve",
    "sse_response",
]
