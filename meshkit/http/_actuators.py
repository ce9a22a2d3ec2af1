"""Actuator endpoints every app has: /info, /info/lib, /info/routes, /env, /health, /livenessprobe, and
/asyncapi.json."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import logging
import os
import platform as _sys_platform
from collections.abc import Awaitable, Callable
from typing import Any

import fastapi
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from meshkit.config import masked
from meshkit.core import Platform, elapsed_text, iso_utc_ms
from meshkit.http._asyncapi import asyncapi_document
from meshkit.http._catalog import route_catalog
from meshkit.http._health import HealthMonitor
from meshkit.security import KEY_HEADER, MeshKeys

log = logging.getLogger("meshkit.actuators")

AdditionalInfo = Callable[[], Awaitable[dict[str, Any]]]


def actuator_router(
    platform: Platform, health: HealthMonitor, additional_info: AdditionalInfo | None = None
) -> APIRouter:
    router = APIRouter(tags=["actuators"])
    keys = MeshKeys(platform.config)
    protected = platform.config.get_bool("protect.info.endpoints", False)

    def guard(request: Request) -> None:
        """/env and /info/lib show the app's insides: with protect.info.endpoints, a mesh key is needed."""
        if protected and (not keys.required or not keys.accepts(request.headers.get(KEY_HEADER))):
            client = request.client.host if request.client else "unknown"
            log.warning(
                "Refused %s from %s: protected, no valid %s header", request.url.path, client, KEY_HEADER
            )
            raise HTTPException(
                401, f"{request.url.path} is protected: present a mesh API key ({KEY_HEADER})"
            )

    @router.get("/info")
    async def info() -> dict[str, Any]:
        now = _dt.datetime.now(_dt.UTC)
        started = platform.started_at or now
        result: dict[str, Any] = {
            "app": {"name": platform.name, "version": platform.version, "description": platform.description},
            "personality": platform.personality,
            "origin": platform.origin,
            "time": {"start": iso_utc_ms(started), "current": iso_utc_ms(now)},
            "uptime": elapsed_text((now - started).total_seconds()),
            "runtime": {
                "python": _sys_platform.python_version(),
                "implementation": _sys_platform.python_implementation(),
                "meshkit": _version("meshkit"),
                "fastapi": fastapi.__version__,
                "os": f"{_sys_platform.system()} {_sys_platform.machine()}",
                "pid": os.getpid(),
            },
        }
        if additional_info is not None:
            result["additional_info"] = await additional_info()
        return result

    @router.get("/info/lib", dependencies=[Depends(guard)])
    async def libraries() -> dict[str, Any]:
        dists = sorted(
            {
                f"{d.metadata['Name']}=={d.version}"
                for d in importlib.metadata.distributions()
                if d.metadata["Name"]
            },
            key=str.lower,
        )
        return {"app": platform.name, "origin": platform.origin, "total": len(dists), "library": dists}

    @router.get("/info/routes")
    async def routes(detail: bool = False) -> dict[str, Any]:
        """The distributed routing table; `detail=true` adds the catalog: each route's contract."""
        table: dict[str, Any] = {
            "app": platform.name,
            "origin": platform.origin,
            "routing": routing_table(platform),
        }
        if detail:
            table["catalog"] = route_catalog(platform)
        return table

    @router.get("/asyncapi.json")
    async def asyncapi(request: Request) -> dict[str, Any]:
        """An AsyncAPI 3 document of this app's public functions (meshkit.http._asyncapi)."""
        return asyncapi_document(platform, request.headers.get("host"))

    @router.get("/env", dependencies=[Depends(guard)])
    async def env() -> dict[str, Any]:
        config = platform.config
        variables = {k: masked(k, os.environ.get(k, "")) for k in config.get_list("show.env.variables")}
        properties = {
            k: masked(k, config.get(k) or "") for k in config.get_list("show.application.properties")
        }
        public = {s.route: s.instances for s in platform.functions() if not s.private}
        private = {s.route: s.instances for s in platform.functions() if s.private}
        return {
            "app": platform.name,
            "origin": platform.origin,
            "env": variables,
            "properties": properties,
            "routing": {"public": dict(sorted(public.items())), "private": dict(sorted(private.items()))},
        }

    @router.get("/health")
    async def health_check() -> JSONResponse:
        healthy, body = await health.check()
        return JSONResponse(body, status_code=200 if healthy else 503 if body.get("draining") else 400)

    @router.get("/livenessprobe", response_class=PlainTextResponse)
    async def livenessprobe() -> PlainTextResponse:
        if health.last_ok:
            return PlainTextResponse("OK")
        return PlainTextResponse("Unhealthy. Please check the /health endpoint.", status_code=400)

    return router


def routing_table(platform: Platform) -> dict[str, Any]:
    """route -> {origin: "name, PERSONALITY"} for every public route known here, and the known nodes."""
    me = f"{platform.name}, {platform.personality}"
    routes: dict[str, dict[str, str]] = {route: {platform.origin: me} for route in platform.public_routes()}
    nodes: dict[str, Any] = {
        platform.origin: {
            "name": platform.name,
            "version": platform.version,
            "personality": platform.personality,
        }
    }
    if platform.remote is not None:
        remote_routes, remote_nodes = platform.remote.describe()
        for route, origins in remote_routes.items():
            routes.setdefault(route, {}).update(origins)
        nodes.update(remote_nodes)
    return {"routes": dict(sorted(routes.items())), "nodes": nodes}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
