"""A monitor's claims of virtual topics through the log (docs/protocol/control.md#claims)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from meshkit.connectors import ConnectorError
from meshkit.mesh import TopicLayout
from presence_server._hello import HELLO_FIELDS, Refused
from presence_server._state import ClaimResult, MeshState

Publish = Callable[[dict[str, Any]], Awaitable[None]]
CLAIM_WAIT = 5.0  # seconds for a claim to come back through the log
MAX_CLAIMS = 8  # per hello


class TopicClaims:
    """Claims this monitor has in flight, and the choice of topic for each."""

    def __init__(
        self, monitor: str, state: MeshState, layout: TopicLayout, publish: Publish, alive_within: float
    ) -> None:
        self.monitor = monitor
        self.state = state
        self.layout = layout
        self.publish = publish
        self.alive_within = alive_within
        self._pending: dict[tuple[int, str], asyncio.Future[ClaimResult]] = {}

    def resolve(self, result: ClaimResult) -> None:
        """A claim of this monitor came back through the log."""
        future = self._pending.get((result.topic, result.origin))
        if future is not None and not future.done():
            future.set_result(result)

    async def admit(self, origin: str, hello: dict[str, Any], wait_for_old: float) -> int:
        """The virtual topic the app gets; Refused when it cannot have one."""
        existing = self.state.connections.get(origin)
        replaces: str | None = None
        if existing is not None and existing.monitor != self.monitor:
            # the app moves here from another monitor: wait until that one is gone or has released it (its
            # leave is in the log), else it is a duplicate
            old = existing.monitor
            deadline = time.monotonic() + wait_for_old
            # polls a clock (heartbeats stopping) and the log's state, which no event signals
            while self._held_via(origin, old) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            if self._held_via(origin, old):
                raise Refused(f"origin {origin} is already connected via monitor {old}")
            if self._holder(origin) == old:
                replaces = old  # seen gone: this claim may take the app over
        preferred: int | None = None
        if isinstance(hello.get("topic"), str):
            with contextlib.suppress(ValueError):
                preferred = self.layout.index_of(hello["topic"])
        return await self._claim(origin, hello, preferred, replaces)

    def _holder(self, origin: str) -> str | None:
        connection = self.state.connections.get(origin)
        return connection.monitor if connection is not None else None

    def _held_via(self, origin: str, monitor: str) -> bool:
        """`monitor` still holds the app and is alive."""
        return self._holder(origin) == monitor and self.state.alive(monitor, self.alive_within)

    def _lane(self) -> tuple[int, int]:
        """This monitor's place among the live ones: each prefers never-used topics of its own lane."""
        alive = {m for m in self.state.monitors if self.state.alive(m, self.alive_within)} | {self.monitor}
        ordered = sorted(alive)
        return ordered.index(self.monitor), len(ordered)

    async def _claim(
        self, origin: str, hello: dict[str, Any], preferred: int | None, replaces: str | None
    ) -> int:
        limit = self.layout.max_virtual_topics
        tried: set[int] = set()
        for _ in range(MAX_CLAIMS):
            if (
                preferred is not None
                and preferred not in tried
                and self.state.holders.get(preferred) in (None, origin)
            ):
                topic: int | None = preferred
            else:
                pending = {t for t, _ in self._pending}
                topic = self.state.free_topic(limit, tried | pending, *self._lane())
            if topic is None:
                raise Refused(f"the mesh is full: all {limit} virtual topics are in use")
            tried.add(topic)
            future: asyncio.Future[ClaimResult] = asyncio.get_running_loop().create_future()
            self._pending[(topic, origin)] = future
            info = {k: hello[k] for k in HELLO_FIELDS}
            claim = {"type": "claim", "topic": topic, "origin": origin, "monitor": self.monitor, "info": info}
            if replaces is not None:
                claim["replaces"] = replaces
            if hello.get("cards") is True:
                claim["cards"] = True
            try:
                await self.publish(claim)
                result = await asyncio.wait_for(future, CLAIM_WAIT)
                if result.won:
                    return topic
                if result.held_via is not None:  # another monitor holds the origin: no topic will do
                    raise Refused(f"origin {origin} is already connected via monitor {result.held_via}")
            except (TimeoutError, ConnectorError) as exc:
                raise Refused(f"topic claim failed: {exc or type(exc).__name__}") from exc
            finally:
                self._pending.pop((topic, origin), None)
        raise Refused("could not claim a virtual topic: too many conflicts")
