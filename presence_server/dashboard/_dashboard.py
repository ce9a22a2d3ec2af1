"""The mesh dashboard: `GET /` (one self-contained page) and `GET /api/mesh` (what the page shows).

The page polls `/api/mesh` every second. The JSON is built from this monitor's view of the mesh
(`monitor.state`, the same data as `/info`), the routes the apps announced to their closed user group
(:class:`RouteBook`), and recent events found by comparing the connections from one look to the next.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import hashlib
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from meshkit.connectors import ConnectorError
from meshkit.core import elapsed_text, iso_utc_ms
from presence_server._info import parse_iso
from presence_server.dashboard._routes import RouteBook

if TYPE_CHECKING:
    from presence_server._monitor import PresenceMonitor

log = logging.getLogger("presence_server.dashboard")

WATCH_SECONDS = 0.5  # how often connections are compared for joins and leaves
TOPICS_TTL = 5.0  # the broker's topic list is asked at most this often
MAX_EVENTS = 200
SHOWN_EVENTS = 50
FORGET_ROUTES_AFTER = 60.0  # routes of an origin never (or no longer) seen as a connection


@dataclass(frozen=True)
class _Seen:
    name: str
    version: str
    type: str
    topic: str
    monitor: str


def _now() -> str:
    return iso_utc_ms(_dt.datetime.now(_dt.UTC))


def _load_page() -> tuple[bytes, str]:
    """The page, and a Content-Security-Policy that allows exactly its inline script and style."""
    page = resources.files("presence_server.dashboard").joinpath("page.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
        )

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page.encode("utf-8"), policy


class Dashboard:
    """Create it with the app, `start(monitor)` once the monitor runs, `stop()` before the monitor stops."""

    def __init__(self) -> None:
        self.monitor: PresenceMonitor | None = None
        self.routes: RouteBook | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._seen: dict[str, _Seen] = {}
        self._monitors: set[str] = set()
        self._missing: dict[str, float] = {}
        self._cards: dict[str, object] = {}  # origin -> the signature of the card the route book took
        self._watcher: asyncio.Task[None] | None = None
        self._topics: dict[str, int] = {}
        self._topics_at = -TOPICS_TTL
        self._topics_error: str | None = None
        self._topics_lock: asyncio.Lock | None = None
        self._page: tuple[bytes, str] | None = None
        self.router = self._router()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self, monitor: PresenceMonitor) -> None:
        self.monitor = monitor
        self._topics_lock = asyncio.Lock()
        self.routes = RouteBook(
            monitor.connector,
            monitor.groups,
            on_change=self._routes_changed,
            verify=monitor.keys.verify,
        )
        try:
            await self.routes.start()
        except ConnectorError as exc:
            log.warning("Dashboard: app routes not shown: %s", exc)
        self._look(first=True)
        self._watcher = asyncio.create_task(self._watch(), name="presence:dashboard")
        log.info("Mesh dashboard at / (data: /api/mesh)")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.routes is not None:
            await self.routes.stop()

    # -- recent events ----------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                self._look()
            except Exception:  # the dashboard must never take the monitor down
                log.exception("Dashboard: comparing connections failed")

    def _look(self, first: bool = False) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        now = monitor.state.connections
        seen: dict[str, _Seen] = {}
        for origin, c in now.items():
            seen[origin] = _Seen(c.name, c.version, c.type, _topic_name(monitor, c.topic), c.monitor)
            card = c.card
            if self.routes is not None and card is not None and self._cards.get(origin) != card.get("sig"):
                self._cards[origin] = card.get("sig")
                contracts = monitor.state.bodies.get(c.contracts) if c.contracts else None
                self.routes.take_card(origin, c.group, card, contracts)
        if not first:
            for origin, s in seen.items():
                before = self._seen.get(origin)
                if before is None:
                    self._event("join", origin, s, f"joined on {s.topic}")
                elif before.monitor != s.monitor:
                    self._event("moved", origin, s, f"moved to monitor {s.monitor[-8:]}")
            for origin, s in self._seen.items():
                if origin not in seen:
                    self._event("leave", origin, s, f"left, {s.topic} released")
                    self._cards.pop(origin, None)
                    if self.routes is not None:
                        self.routes.forget(origin)
        self._seen = seen
        alive = {m for m in monitor.state.monitors if monitor.state.alive(m, monitor.monitor_timeout)}
        alive.add(monitor.id)
        if not first:
            for m in sorted(alive - self._monitors):
                self._event("monitor-up", m, None, "monitor joined")
            for m in sorted(self._monitors - alive):
                self._event("monitor-down", m, None, "monitor gone")
        self._monitors = alive
        if self.routes is not None:  # routes of apps that never showed up as a connection, or went away
            clock = time.monotonic()
            for origin in list(self.routes.apps):
                if origin in seen:
                    self._missing.pop(origin, None)
                elif clock - self._missing.setdefault(origin, clock) > FORGET_ROUTES_AFTER:
                    self.routes.forget(origin)
                    self._missing.pop(origin, None)

    def _routes_changed(self, origin: str, added: list[str], removed: list[str]) -> None:
        parts = [f"+{r}" for r in added] + [f"-{r}" for r in removed]
        self._event("routes", origin, self._seen.get(origin), "routes " + " ".join(parts))

    def _event(self, kind: str, origin: str, seen: _Seen | None, text: str) -> None:
        self.events.append(
            {
                "time": _now(),
                "kind": kind,
                "origin": origin,
                "name": seen.name if seen else "",
                "version": seen.version if seen else "",
                "text": text,
            }
        )

    # -- the data ---------------------------------------------------------------------------------------
    async def _mesh_topics(self) -> dict[str, int]:
        assert self.monitor is not None and self._topics_lock is not None
        async with self._topics_lock:
            if time.monotonic() - self._topics_at >= TOPICS_TTL:
                try:
                    self._topics = await self.monitor.mesh_topics()
                    self._topics_error = None
                except ConnectorError as exc:
                    self._topics_error = str(exc) or type(exc).__name__
                self._topics_at = time.monotonic()
            return self._topics

    async def snapshot(self) -> dict[str, Any]:
        monitor = self.monitor
        if monitor is None:
            raise HTTPException(503, "The presence monitor is starting")
        topics = await self._mesh_topics()
        state, platform = monitor.state, monitor.platform
        clock = _dt.datetime.now(_dt.UTC)
        apps = []
        for c in sorted(state.connections.values(), key=lambda c: (c.name, c.topic)):
            created = parse_iso(c.created)
            apps.append(
                {
                    "origin": c.origin,
                    "name": c.name,
                    "version": c.version,
                    "type": c.type,
                    "topic": _topic_name(monitor, c.topic),
                    "group": c.group,
                    "monitor": c.monitor,
                    "seq": c.seq,
                    "updated": c.updated,
                    "created": c.created,
                    "elapsed": elapsed_text((clock - created).total_seconds()) if created else "",
                    "routes": self.routes.routes_of(c.origin) if self.routes is not None else None,
                    "path": self.routes.path_of(c.origin) if self.routes is not None else None,
                }
            )
        apps_per_monitor: dict[str, int] = {}
        for c in state.connections.values():
            apps_per_monitor[c.monitor] = apps_per_monitor.get(c.monitor, 0) + 1
        monitors = []
        for m, (_, seen_at) in sorted(state.monitors.items()):
            monitors.append(
                {
                    "id": m,
                    "me": m == monitor.id,
                    "alive": m == monitor.id or state.alive(m, monitor.monitor_timeout),
                    "seen": seen_at,
                    "apps": apps_per_monitor.get(m, 0),
                }
            )
        if not any(m["me"] for m in monitors):
            monitors.insert(0, {"id": monitor.id, "me": True, "alive": True, "seen": _now(), "apps": 0})
        events = list(self.events)[-SHOWN_EVENTS:]
        events.reverse()
        return {
            "time": iso_utc_ms(clock),
            "monitor": {
                "id": monitor.id,
                "name": platform.name,
                "version": platform.version,
                "connector": monitor.connector.name,
                "href": monitor.connector.href,
                "uptime": elapsed_text((clock - (platform.started_at or clock)).total_seconds()),
            },
            "totals": {
                "apps": len(state.connections),
                "virtual_topics": len(state.holders),
                "topics": len(topics),
                "monitors": sum(1 for m in monitors if m["alive"]),
            },
            "limits": {"virtual_topics": monitor.layout.max_virtual_topics, "groups": monitor.groups},
            "apps": apps,
            "monitors": monitors,
            "topics": [{"name": t, "partitions": n} for t, n in topics.items()],
            "events": events,
            "warning": f"Topic list unavailable: {self._topics_error}" if self._topics_error else None,
        }

    # -- HTTP -------------------------------------------------------------------------------------------
    def _router(self) -> APIRouter:
        router = APIRouter(tags=["dashboard"])

        @router.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def page() -> HTMLResponse:
            if self._page is None:
                self._page = _load_page()
            body, policy = self._page
            return HTMLResponse(
                body,
                headers={
                    "Content-Security-Policy": policy,
                    "Cache-Control": "no-store",
                    "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer",
                },
            )

        @router.get("/api/mesh")
        async def mesh() -> dict[str, Any]:
            return await self.snapshot()

        @router.get("/api/contract")
        async def contract(origin: str, route: str) -> dict[str, Any]:
            """What a route of an app takes and returns, as the app's `contracts` message said."""
            found = self.routes.contract_of(origin, route) if self.routes is not None else None
            if found is None:
                raise HTTPException(404, f"No contract known for {route[:200]} at {origin[:80]}")
            app = self.routes.apps[origin] if self.routes is not None else None
            return {"origin": origin, "app": app.name if app else "", "route": route, **found}

        return router


def _topic_name(monitor: PresenceMonitor, index: int) -> str:
    try:
        return monitor.layout.virtual(index).name
    except ValueError:  # from a peer monitor with another layout: show what is known
        return f"#{index}"
