"""One call turns a FastAPI app into a meshkit app: platform, actuators, Event over HTTP, and the mesh."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from meshkit._actuators import AdditionalInfo, actuator_router
from meshkit._config import AppConfig, ConfigError
from meshkit._functions import FunctionSpec, default_registry
from meshkit._health import HealthMonitor
from meshkit._http_server import event_router
from meshkit._logging import set_log_origin, setup_logging
from meshkit._metrics import install_metrics
from meshkit._platform import Platform
from meshkit._tracing import install_tracing

log = logging.getLogger("meshkit.app")

CONNECTORS = ("none", "kafka", "hazelcast")


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


def load_config(config_dir: str | Path | None, properties: Mapping[str, str] | None = None) -> AppConfig:
    return AppConfig.load(search_paths=[Path(config_dir) if config_dir else Path.cwd()], overrides=properties)


def install(
    app: FastAPI,
    *,
    config: AppConfig,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    personality: str = "APP",
    functions: Iterable[FunctionSpec] | None = None,
    scan: Sequence[str] = (),
    additional_info: AdditionalInfo | None = None,
    join_mesh: bool = True,
) -> Platform:
    """Add meshkit to an existing FastAPI app; the platform is `app.state.platform`."""
    setup_logging(config)
    for module in scan:
        importlib.import_module(module)
    if functions is None:
        functions = default_registry.select(scan)
    connector = connector_kind(config)
    platform = Platform(
        config,
        name=name,
        version=version,
        description=description,
        personality=personality,
        functions=functions,
    )
    set_log_origin(platform.origin)
    health = HealthMonitor(platform)
    app.state.platform = platform
    app.include_router(actuator_router(platform, health, additional_info))
    app.include_router(event_router(platform))
    install_metrics(app, platform)  # GET /metrics
    install_tracing(app, platform)  # X-Trace-Id / traceparent at the HTTP edge
    user_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        await platform.start()
        try:
            if connector != "none" and join_mesh:
                from meshkit.mesh import join_mesh as join

                await join(platform, connector)
            async with user_lifespan(application) as state:
                yield state
        finally:
            await platform.stop()

    app.router.lifespan_context = lifespan
    return platform


def connector_kind(config: AppConfig) -> str:
    kind = (config.get("cloud.connector", "none") or "none").strip().lower()
    if kind not in CONNECTORS:
        raise ConfigError(
            f"cloud.connector={kind!r} ({config.source_of('cloud.connector')}): "
            f"expected one of {', '.join(CONNECTORS)}"
        )
    return kind
