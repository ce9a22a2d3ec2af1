"""The routes each app offers, read (never written) from the closed user groups' control partitions.

Apps with cards (docs/protocol/presence.md#cards) hand the monitors what they serve: the dashboard takes it
from the cards the monitor keeps (`take_card`). Apps without cards announce themselves to their group on
`service.monitor` partition 1..N: ``join`` carries the app's public routes, ``routes`` adds or removes some
later, ``contracts`` says what they take and return, and the monitor's ``leave`` ends it. The monitor does
not take part in that exchange; this book only listens. Such an app that joined before this monitor started
listening has unknown routes until it joins again (it does when it moves to another monitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from meshkit.connectors import Connector, ConnectorError, Subscription
from meshkit.mesh import MONITOR_TOPIC, FrameError, parse, parse_contracts

log = logging.getLogger("presence_server.dashboard")

MAX_ROUTES = 2000  # per app: a dashboard, not a second routing table
MAX_ROUTE_CHARS = 200

# (origin, added, removed): routes changed after the app's join
OnChange = Callable[[str, list[str], list[str]], None]
# True when a control message carries a valid signature (or the mesh has no key): MeshKeys.verify
Verify = Callable[[dict[str, Any]], bool]


@dataclass
class AppRoutes:
    origin: str
    name: str
    group: int
    routes: set[str] = field(default_factory=set)
    direct: str | None = None  # where it takes direct connections, as its join said (None: broker only)
    contracts: dict[str, dict[str, Any]] = field(default_factory=dict)  # its `contracts` message: route -> it


class RouteBook:
    """origin -> the public routes it announced on its group's control partition."""

    def __init__(
        self,
        connector: Connector,
        groups: int,
        on_change: OnChange | None = None,
        verify: Verify | None = None,
    ) -> None:
        self.connector = connector
        self.groups = groups
        self.on_change = on_change
        self.verify = verify
        self.apps: dict[str, AppRoutes] = {}
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        await self.connector.ensure_topic(MONITOR_TOPIC, self.groups + 1)
        results = await asyncio.gather(
            *(
                # a dashboard can wait: a connector that polls (Kafka) asks the broker seldom for these
                self.connector.consume(
                    MONITOR_TOPIC, group, partial(self._on_record, group), latency="background"
                )
                for group in range(1, self.groups + 1)
            ),
            return_exceptions=True,
        )
        for group, result in enumerate(results, start=1):
            if isinstance(result, BaseException):
                log.warning("Dashboard: routes of group %d not shown: %s", group, result)
            else:
                self._subscriptions.append(result)

    async def stop(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(ConnectorError):
                await subscription.close()

    def routes_of(self, origin: str) -> list[str] | None:
        """Sorted routes, or None when this monitor has not seen the app's join."""
        app = self.apps.get(origin)
        return sorted(app.routes) if app is not None else None

    def path_of(self, origin: str) -> str | None:
        """ "direct <address>" or "broker" as the app's join said; None when this monitor has not seen it."""
        app = self.apps.get(origin)
        if app is None:
            return None
        return f"direct {app.direct}" if app.direct else "broker"

    def contract_of(self, origin: str, route: str) -> dict[str, Any] | None:
        """What `route` at `origin` takes and returns, as its `contracts` message said (None: not known)."""
        app = self.apps.get(origin)
        if app is None or route not in app.routes:
            return None
        return app.contracts.get(route)

    def forget(self, origin: str) -> None:
        self.apps.pop(origin, None)

    def take_card(self, origin: str, group: int, card: dict[str, Any], contracts: object) -> None:
        """An app's card as the monitors keep it (docs/protocol/presence.md#cards): what its join says,
        checked by the monitor that took it, so shown with a mesh key too."""
        known = self.apps.get(origin)
        before = set(known.routes) if known is not None else None
        try:
            self._apply(group, {**card, "type": "join", "origin": origin})
            if contracts is not None:
                self._apply(group, {"type": "contracts", "origin": origin, "contracts": contracts})
        except FrameError as exc:
            log.debug("Dashboard skipped the card of %s: %s", origin, exc)
            return
        now = self.apps[origin].routes
        if before is not None and before != now and self.on_change is not None:
            self.on_change(origin, sorted(now - before), sorted(before - now))

    # -- records ----------------------------------------------------------------------------------------
    def _on_record(self, group: int, record: bytes) -> None:
        try:
            frame = parse(record)
            message = frame.get("payload")
            if frame["type"] != "control" or not isinstance(message, dict):
                return  # events and loopbacks ride these partitions too: not ours
            if self.verify is not None and not self.verify(message):
                raise FrameError(f"a {message.get('type')!r} message without a valid signature")
            self._apply(group, message)
        except (FrameError, KeyError, TypeError, ValueError) as exc:
            log.debug("Dashboard skipped a record on %s partition %d: %s", MONITOR_TOPIC, group, exc)

    def _apply(self, group: int, message: dict[str, Any]) -> None:
        kind, origin = message.get("type"), message.get("origin")
        if not isinstance(origin, str) or not origin:
            return
        if kind == "join":
            name = message.get("name")
            direct = message.get("direct")
            self.apps[origin] = AppRoutes(
                origin,
                name if isinstance(name, str) else "",
                group,
                set(_routes(message.get("routes"))),
                direct[:MAX_ROUTE_CHARS] if isinstance(direct, str) else None,
            )
        elif kind == "routes":
            app = self.apps.get(origin)
            if app is None:  # joined before we listened: a partial list would mislead
                return
            added = [r for r in _routes(message.get("add")) if r not in app.routes]
            removed = [r for r in _routes(message.get("remove")) if r in app.routes]
            app.routes.difference_update(removed)
            for route in added:
                if len(app.routes) < MAX_ROUTES:
                    app.routes.add(route)
            if (added or removed) and self.on_change is not None:
                self.on_change(origin, added, removed)
        elif kind == "contracts":
            app = self.apps.get(origin)
            if app is not None:  # after its join, as for routes
                app.contracts = parse_contracts(message.get("contracts"))
        elif kind == "leave":
            self.forget(origin)


def _routes(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise FrameError("routes must be a list of strings")
    return [r for r in value[:MAX_ROUTES] if 0 < len(r) <= MAX_ROUTE_CHARS]
