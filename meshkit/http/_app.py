"""One call turns a FastAPI app into a meshkit app: platform, actuators, Event over HTTP, and the mesh."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route, WebSocketRoute

from meshkit.config import AppConfig
from meshkit.connectors import connector_kind, make_connector
from meshkit.core import FunctionSpec, Platform, default_registry
from meshkit.http._actuators import AdditionalInfo, actuator_router
from meshkit.http._client import EventOverHttp
from meshkit.http._direct import DIRECT_PATH, DirectEndpoint
from meshkit.http._health import HealthMonitor
from meshkit.http._routes import add_routes, settle_routes
from meshkit.http._server import event_router
from meshkit.observe import Tracer, install_metrics, install_tracing, instrument, setup_logging

log = logging.getLogger("meshkit.app")


def create_app(
    *,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    personality: str = "APP",
    config_dir: str | Path | None = None,
    properties: Mapping[str, str] | None = None,
    functions: Iterable[FunctionSpec] | None = None,
    scan: Sequence[str] = (),
    additional_info: AdditionalInfo | None = None,
    join_mesh: bool = True,
) -> FastAPI:
    """A FastAPI app whose lifespan runs a meshkit platform.

    `config_dir` holds application.properties / application.yml (default: the working directory);
    `properties` override every other source; `scan` names the packages whose `@route` functions this app
    runs (imported first; all declared functions when empty); `functions` gives the list explicitly instead.
    `join_mesh=False` keeps the app out of the mesh even with a connector configured (the presence monitor).
    """
    config = load_config(config_dir, properties)
    app = FastAPI(
        title=name or config.get("application.name", "meshkit app") or "meshkit app",
        version=version or config.get("info.app.version", "1.0.0") or "1.0.0",
    )
    install(
        app,
        name=name,
        version=version,
        description=description,
        personality=personality,
        config=config,
        functions=functions,
        scan=scan,
        additional_info=additional_info,
        join_mesh=join_mesh,
    )
    return app


def load_config(
    config_dir: str | Path | None = None, properties: Mapping[str, str] | None = None
) -> AppConfig:
    """The app's configuration: application.properties / .yml in `config_dir` (default: the working
    directory), under `-D` arguments, the environment and `properties` (see the README's precedence)."""
    return AppConfig.load(search_paths=[Path(config_dir) if config_dir else Path.cwd()], overrides=properties)


def install(
    app: FastAPI,
    *,
    config: AppConfig | None = None,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    personality: str = "APP",
    functions: Iterable[FunctionSpec] | None = None,
    scan: Sequence[str] = (),
    additional_info: AdditionalInfo | None = None,
    join_mesh: bool = True,
) -> Platform:
    """Add meshkit to an existing FastAPI app; the platform is `app.state.platform`.

    Without `config`, the configuration is `load_config()`: application.properties from the working
    directory, as `create_app` reads it.
    """
    if config is None:
        config = load_config()
    setup_logging(config)
    for module in scan:
        importlib.import_module(module)
    if functions is None:
        functions = default_registry.select(scan)
    joins = connector_kind(config) != "none" and join_mesh  # a bad cloud.connector is refused here
    platform = Platform(
        config,
        name=name,
        version=version,
        description=description,
        personality=personality,
        functions=functions,
    )
    tracer = equip(platform)
    health = HealthMonitor(platform)
    app.state.platform = platform
    # the routes themselves, not the routers (an included router is matched again on every request in
    # FastAPI 0.16x), behind one lookup by path (meshkit/http/_routes.py)
    start = len(app.router.routes)
    app.router.routes.extend(actuator_router(platform, health, additional_info).routes)
    app.router.routes.extend(event_router(platform).routes)
    install_metrics(app, platform)  # GET /metrics
    direct = DirectEndpoint()
    app.router.routes.append(WebSocketRoute(DIRECT_PATH, direct))  # peers' direct connections
    own = [route for route in app.router.routes[start:] if isinstance(route, Route | WebSocketRoute)]
    del app.router.routes[start:]
    add_routes(app, own)
    install_tracing(app, tracer)  # X-Trace-Id / traceparent at the HTTP edge
    user_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        settle_routes(application)  # the app's own routes are all there now
        await platform.start()
        try:
            if joins:
                from meshkit.mesh import join_mesh as join  # only an app in a mesh loads it (websockets, ...)

                node = await join(platform, make_connector(config))
                direct.links = node.direct
            async with user_lifespan(application) as state:
                yield state
            await platform.drain()  # done already if `meshkit run` had it drain on SIGTERM
        finally:
            await platform.stop()

    app.router.lifespan_context = lifespan
    return platform


def equip(platform: Platform) -> Tracer:
    """Plug into a platform what `install` does, without an app: its tracer and log context, and the
    Event-over-HTTP client; before `start`. Returns the tracer (the HTTP edge shares it)."""
    tracer = instrument(platform)
    platform.event_client = EventOverHttp(platform)
    return tracer
