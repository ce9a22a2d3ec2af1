"""The mesh as every monitor sees it, rebuilt from the messages on `service.monitor` partition 0
(docs/protocol/control.md).

Every monitor applies the same messages in the same (log) order, so they agree on who holds which virtual
topic: a claim wins if the topic is free or already held by the same app, and loses otherwise.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from meshkit.core import iso_utc_ms

log = logging.getLogger("presence_server.state")


@dataclass
class Connection:
    origin: str
    name: str
    version: str
    type: str
    group: int
    created: str
    topic: int  # virtual topic index
    monitor: str
    updated: str = ""
    seq: int = 0
    key: str = ""  # the app's public key (Ed25519, base64), vouched for to its group
    draining: bool = False  # it said it is stopping: its group sends it no new requests

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClaimResult:
    origin: str
    topic: int
    won: bool
    released: int | None = None  # a topic the app held before and gave up by this claim
    held_via: str | None = None  # lost because the origin is connected through this other monitor


def _now_iso() -> str:
    return iso_utc_ms(_dt.datetime.now(_dt.UTC))


class MeshState:
    def __init__(self, max_topics: int = 288) -> None:
        self.max_topics = max_topics
        self.connections: dict[str, Connection] = {}
        self.holders: dict[int, str] = {}
        # topic -> when (in log order) it was last released: a topic never used, then the one free longest,
        # is handed out first, so records left for a gone app rarely meet a newcomer, and logs grow evenly
        self.released: dict[int, int] = {}
        self._releases = 0
        self.monitors: dict[str, tuple[float, str]] = {}  # id -> (monotonic last seen, ISO time)

    # -- applying log messages -----------------------------------------------------------------------------
    def claim(self, message: dict[str, Any]) -> ClaimResult:
        """Apply a claim; a malformed one raises ValueError/KeyError/TypeError and changes nothing.

        An origin held through another monitor is taken over only by a claim that names that monitor in
        `replaces` (its writer saw it gone): decided in log order, so every monitor agrees, whatever it saw.
        """
        origin, topic, monitor = str(message["origin"]), int(message["topic"]), str(message["monitor"])
        if not 0 <= topic < self.max_topics:
            raise ValueError(f"claim for virtual topic {topic} outside 0..{self.max_topics - 1}")
        previous = self.connections.get(origin)
        if (
            previous is not None
            and previous.monitor != monitor
            and previous.monitor != message.get("replaces")
        ):
            return ClaimResult(origin, topic, won=False, held_via=previous.monitor)
        holder = self.holders.get(topic)
        if holder is not None and holder != origin:
            return ClaimResult(origin, topic, won=False)
        info = message["info"]
        if not isinstance(info, dict):
            raise TypeError("claim info must be a map")
        if not all(
            isinstance(info.get(k), str) for k in ("name", "version", "personality", "created", "key")
        ):
            raise TypeError("claim info needs name, version, personality, created and key as strings")
        group = info.get("group")
        if not isinstance(group, int) or isinstance(group, bool) or not 1 <= group <= 10_000:
            raise ValueError(f"claim info group {group!r} is not a closed user group number")
        connection = Connection(
            origin=origin,
            name=info["name"][:200],
            version=info["version"][:200],
            type=info["personality"][:200],
            group=group,
            created=info["created"][:40],
            topic=topic,
            monitor=monitor,
            updated=_now_iso(),
            seq=previous.seq if previous else 0,
            key=info["key"][:100],
        )
        released = None  # only now that the claim is well formed does anything change
        if previous is not None and previous.topic != topic and self.holders.get(previous.topic) == origin:
            self._release(previous.topic)
            released = previous.topic
        self.holders[topic] = origin
        self.connections[origin] = connection
        return ClaimResult(origin, topic, won=True, released=released)

    def drain(self, origin: str, monitor: str) -> Connection | None:
        """The app said it is stopping (through `monitor`); the connection if that is news."""
        connection = self.connections.get(origin)
        if connection is None or connection.monitor != monitor or connection.draining:
            return None
        connection.draining = True
        return connection

    def leave(self, origin: str, owner: str | None = None) -> Connection | None:
        """Remove an app. `owner` is the monitor it belonged to when the leave was decided: if the app has
        moved to another monitor since (a later claim in the log), the leave is stale and changes nothing."""
        connection = self.connections.get(origin)
        if connection is None or (owner is not None and connection.monitor != owner):
            return None
        del self.connections[origin]
        if self.holders.get(connection.topic) == origin:
            self._release(connection.topic)
        return connection

    def _release(self, topic: int) -> None:
        del self.holders[topic]
        self._releases += 1
        self.released[topic] = self._releases

    def heartbeat(self, message: dict[str, Any]) -> None:
        monitor = str(message["id"])
        self.monitors[monitor] = (time.monotonic(), str(message.get("time") or _now_iso()))
        seen = message.get("seen")
        if seen is None:
            return
        if not isinstance(seen, dict):
            raise ValueError("a heartbeat's 'seen' must be a map")
        malformed = 0
        for origin, entry in seen.items():
            if not (
                isinstance(entry, list | tuple)
                and len(entry) == 2
                and isinstance(entry[0], int)
                and not isinstance(entry[0], bool)
                and 0 <= entry[0] < 2**53
            ):
                malformed += 1
                continue
            connection = self.connections.get(origin)
            if connection is not None and connection.monitor == monitor:
                connection.seq, connection.updated = entry[0], str(entry[1])[:40]
        if malformed:  # the good entries are kept; the record is still reported as bad
            raise ValueError(f"{malformed} malformed keep-alive entries in a heartbeat")

    def monitor_gone(self, monitor: str, timeout: float) -> None:
        """A monitor said goodbye: dead from now on, but its apps get the usual grace to move elsewhere."""
        seen = self.monitors.get(monitor)
        if seen is not None:
            self.monitors[monitor] = (min(seen[0], time.monotonic() - timeout - 0.001), seen[1])

    def forget(self, monitor: str) -> None:
        self.monitors.pop(monitor, None)

    def merge(self, snapshot: Any) -> None:
        """Take what a peer monitor knows and this one does not (used once, when a monitor starts)."""
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("connections", []), list):
            raise ValueError("a snapshot is a map with a list of connections")
        malformed = 0
        for raw in snapshot.get("connections", []):
            connection = _connection(raw, self.max_topics)
            if connection is None:
                malformed += 1
                continue
            if connection.origin not in self.connections and connection.topic not in self.holders:
                self.connections[connection.origin] = connection
                self.holders[connection.topic] = connection.origin
        monitors = snapshot.get("monitors")
        for monitor, seen_at in monitors.items() if isinstance(monitors, dict) else ():
            self.monitors.setdefault(str(monitor), (time.monotonic(), str(seen_at)[:40]))
        if malformed:  # the good ones are kept; the record is still reported as bad
            raise ValueError(f"{malformed} malformed connections in a snapshot")

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": [c.public() for c in self.connections.values()],
            "monitors": {m: iso for m, (_, iso) in self.monitors.items()},
        }

    # -- questions -------------------------------------------------------------------------------------------
    def free_topic(self, limit: int, avoid: set[int]) -> int | None:
        """The lowest never-used free topic, else the one released longest ago; None when all are taken."""
        free = (index for index in range(limit) if index not in self.holders and index not in avoid)
        return min(free, key=lambda index: (self.released.get(index, 0), index), default=None)

    def alive(self, monitor: str, within: float) -> bool:
        seen = self.monitors.get(monitor)
        return seen is not None and time.monotonic() - seen[0] <= within

    def dead_monitors(self, within: float) -> list[str]:
        return [m for m in self.monitors if not self.alive(m, within)]


_CONNECTION_TYPES = {
    "origin": str,
    "name": str,
    "version": str,
    "type": str,
    "group": int,
    "created": str,
    "topic": int,
    "monitor": str,
    "updated": str,
    "seq": int,
    "key": str,
}


def _connection(raw: Any, max_topics: int) -> Connection | None:
    """A connection from a peer's snapshot, or None when it is not well formed."""
    if not isinstance(raw, dict) or set(raw) - {"draining"} != set(_CONNECTION_TYPES):
        return None
    if not all(isinstance(raw[k], t) and not isinstance(raw[k], bool) for k, t in _CONNECTION_TYPES.items()):
        return None
    if not isinstance(raw.get("draining", False), bool):  # a monitor from before draining has no such key
        return None
    if not 0 <= raw["topic"] < max_topics or not 0 <= raw["seq"] < 2**53:
        return None
    return Connection(**raw)
