"""meshkit's own endpoints (actuators, `/api/event`, `/metrics`, the direct path's websocket) in an app's
routing, at almost no cost to the app's own endpoints (bench/endpoint.py measures it).

Starlette tries an app's routes in order, each with a regular expression. meshkit's routes are found by one
dict lookup on the request's path instead (`RouteTable`, first in the app's routes), so that neither a
user's route nor a catch-all of theirs stands before them; the routes themselves move to the end of the
list when the app starts, where only a request nothing else matched (a 404) still reaches them, and where
the OpenAPI schema and `url_path_for` find them as usual. Every meshkit path is static.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send


class RouteTable(BaseRoute):
    """meshkit's routes by path: a request for one of them is handed to it after one dict lookup.

    Every request the app serves asks it first, so a miss costs one lookup and nothing else: no call to
    compute the route path unless the app is mounted (a root path).
    """

    def __init__(self, routes: Sequence[Route | WebSocketRoute]) -> None:
        self.routes = list(routes)
        self._by_path: dict[str, list[Route | WebSocketRoute]] = {}
        for route in self.routes:
            self._by_path.setdefault(route.path, []).append(route)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # http and websocket scopes (the router answers lifespan itself); each route checks the type
        candidates = self._by_path.get(get_route_path(scope) if scope.get("root_path") else scope["path"])
        if candidates is None:
            return Match.NONE, {}
        partial: tuple[Match, Scope] | None = None
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is not Match.NONE:
                child_scope.setdefault("route", route)  # an APIRoute puts itself there; a plain one not
            if match is Match.FULL:
                return match, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = (match, child_scope)  # another method: the route answers 405
        return partial if partial is not None else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["route"].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # the routes themselves answer, at the end of the list


def add_routes(app: FastAPI, routes: Sequence[Route | WebSocketRoute]) -> None:
    """Serve `routes` in `app` through a RouteTable; they move behind the app's own when it starts."""
    table = RouteTable(routes)
    app.router.routes.insert(0, table)
    app.router.routes.extend(routes)
    app.state.meshkit_routes = table


def settle_routes(app: FastAPI) -> None:
    """The app starts: meshkit's routes go after the app's own (the table in front still finds them)."""
    table: RouteTable | None = getattr(app.state, "meshkit_routes", None)
    if table is None:
        return
    own = {id(route) for route in table.routes}
    routes = app.router.routes
    routes[:] = [*(r for r in routes if id(r) not in own), *table.routes]
