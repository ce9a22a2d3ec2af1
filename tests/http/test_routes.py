"""meshkit's own endpoints in an app's routing (meshkit/http/_routes.py): found by one lookup, never
shadowed by the app's routes, behind them once the app has started, and in the OpenAPI schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Match, WebSocketRoute

from meshkit import create_app
from meshkit.http._direct import DIRECT_PATH
from meshkit.http._routes import RouteTable


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    application = create_app(name="routes-test", functions=[], properties={"cloud.connector": "none"})

    @application.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @application.get("/{anything:path}")
    async def catch_all(anything: str) -> dict[str, Any]:  # a user's catch-all, after everything else
        return {"caught": anything}

    async with application.router.lifespan_context(application):
        yield application


async def get(app: FastAPI, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(kwargs.pop("method", "GET"), path, **kwargs)


async def test_meshkit_endpoints_come_first_and_a_user_catch_all_shadows_none_of_them(app: FastAPI) -> None:
    assert (await get(app, "/livenessprobe")).text == "OK"
    assert (await get(app, "/health")).json()["status"] == "UP"
    assert (await get(app, "/info")).json()["app"]["name"] == "routes-test"
    assert (await get(app, "/metrics")).status_code == 200
    assert (await get(app, "/hello")).json() == {"hello": "world"}
    assert (await get(app, "/info/nothing")).json() == {"caught": "info/nothing"}
    assert (await get(app, "/health/")).json() == {"caught": "health/"}  # exact paths only


async def test_a_known_path_with_another_method_is_405(app: FastAPI) -> None:
    response = await get(app, "/api/event", method="PUT")  # only POST is served there (the catch-all: GET)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_once_started_the_app_routes_stand_before_meshkits_own_and_a_table_in_front(
    app: FastAPI,
) -> None:
    routes = app.router.routes
    assert isinstance(routes[0], RouteTable)
    own = {id(route) for route in routes[0].routes}
    positions = [i for i, route in enumerate(routes) if id(route) in own]
    users = [
        i for i, route in enumerate(routes) if getattr(route, "path", "") in ("/hello", "/{anything:path}")
    ]
    assert positions and users and max(users) < min(positions)


async def test_the_schema_and_url_path_for_still_know_meshkits_endpoints(app: FastAPI) -> None:
    paths = (await get(app, "/openapi.json")).json()["paths"]
    assert {"/health", "/info", "/metrics", "/hello"} <= set(paths)  # /api/event: MsgPack, no schema
    assert app.url_path_for("health_check") == "/health"


async def test_under_a_root_path_the_table_matches_the_route_path() -> None:
    outer = FastAPI()
    inner = create_app(name="mounted", functions=[], properties={"cloud.connector": "none"})
    outer.mount("/svc", inner)
    async with inner.router.lifespan_context(inner):
        assert (await get(outer, "/svc/livenessprobe")).text == "OK"
        assert (await get(outer, "/svc/health")).json()["status"] == "UP"


async def test_the_direct_paths_websocket_is_in_the_table_and_an_http_request_there_is_not_served(
    app: FastAPI,
) -> None:
    table = app.router.routes[0]
    assert isinstance(table, RouteTable)
    scope: dict[str, Any] = {"type": "websocket", "path": DIRECT_PATH, "root_path": "", "headers": []}
    match, child = table.matches(scope)
    assert match is Match.FULL and isinstance(child["route"], WebSocketRoute)
    assert child["route"].path == DIRECT_PATH
    assert table.matches({**scope, "path": "/hello"})[0] is Match.NONE
    assert table.matches({**scope, "type": "http", "method": "GET"})[0] is Match.NONE
    assert (await get(app, DIRECT_PATH)).json() == {"caught": DIRECT_PATH.lstrip("/")}  # not a websocket
