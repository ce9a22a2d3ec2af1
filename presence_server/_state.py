"""The mesh as every monitor sees it, rebuilt from the messages on `service.monitor` partition 0
(docs/protocol/control.md).

Every monitor applies the same messages in the same (log) order, so they agree on who holds which virtual
topic: a claim wins if the topic is free or already held by the same app, and loses otherwise.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

from meshkit.core import iso_utc_ms
from meshkit.mesh import contracts_digest

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
    cards: bool = False  # its hello said it sends cards: it is told of its group by cards, and not by joins
    card: dict[str, Any] | None = None  # its latest card, signed by it (None: none yet, or without cards)
    contracts: str | None = None  # the digest of the contracts its card names, when they are kept

    def public(self) -> dict[str, Any]:
        """What a snapshot's connection map holds (its card travels beside it, in `cards`)."""
        return {name: getattr(self, name) for name in PUBLIC_FIELDS}


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
        # (lane, lanes) -> an index below which every topic of that lane was used: never-used ones lie above
        self._cursors: dict[tuple[int, int], int] = {}
        self.bodies: dict[str, Any] = {}  # digest -> contracts map, shared by the cards that name it
        self._body_refs: Counter[str] = Counter()

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
        connection.cards = message.get("cards") is True
        if previous is not None and previous.topic == topic and previous.card is not None:
            # moved, still listening where its card's peers send: the card holds until it sends a new one
            connection.card, connection.contracts = previous.card, previous.contracts
        elif previous is not None:
            self._drop_card(previous)
        self.connections[origin] = connection
        return ClaimResult(origin, topic, won=True, released=released)

    def keep_card(self, connection: Connection, card: object, contracts: object) -> None:
        """The app's card (from its claim, or a `card` message), and its contracts when they are what the
        card's digest says; a malformed card is not kept (the app then counts as one without cards)."""
        self._drop_card(connection)
        if not isinstance(card, dict) or card.get("origin") != connection.origin:
            return
        connection.card = card
        digest = card.get("contracts")
        if not isinstance(digest, str):
            return
        if digest not in self.bodies:
            if not isinstance(contracts, dict) or contracts_digest(contracts) != digest:
                return
            self.bodies[digest] = contracts
        connection.contracts = digest
        self._body_refs[digest] += 1

    def _drop_card(self, connection: Connection) -> None:
        digest, connection.card, connection.contracts = connection.contracts, None, None
        if digest is not None:
            self._body_refs[digest] -= 1
            if self._body_refs[digest] <= 0:
                del self._body_refs[digest]
                self.bodies.pop(digest, None)

    def card(self, message: dict[str, Any]) -> Connection | None:
        """Apply a `card` message (a new card of an app, through its monitor); the connection if kept."""
        connection = self.connections.get(str(message["origin"]))
        if connection is None or connection.monitor != message.get("monitor"):
            return None
        self.keep_card(connection, message.get("card"), message.get("contracts"))
        return connection if connection.card is not None else None

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
        self._drop_card(connection)
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

    def heard_from(self, monitor: str) -> None:
        """A record a monitor wrote shows it alive then, as a heartbeat does: a monitor that started beside
        it may read its claims before any heartbeat of it (the first went out before it subscribed)."""
        seen = self.monitors.get(monitor)
        self.monitors[monitor] = (time.monotonic(), seen[1] if seen is not None else _now_iso())

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
        cards = snapshot.get("cards")  # a monitor from before cards sends none
        for raw in snapshot.get("connections", []):
            connection = _connection(raw, self.max_topics)
            if connection is None:
                malformed += 1
                continue
            if connection.origin not in self.connections and connection.topic not in self.holders:
                self.connections[connection.origin] = connection
                self.holders[connection.topic] = connection.origin
                kept = cards.get(connection.origin) if isinstance(cards, dict) else None
                if isinstance(kept, dict):
                    self.keep_card(connection, kept.get("card"), kept.get("contracts"))
        monitors = snapshot.get("monitors")
        for monitor, seen_at in monitors.items() if isinstance(monitors, dict) else ():
            self.monitors.setdefault(str(monitor), (time.monotonic(), str(seen_at)[:40]))
        if malformed:  # the good ones are kept; the record is still reported as bad
            raise ValueError(f"{malformed} malformed connections in a snapshot")

    def snapshot(self) -> dict[str, Any]:
        return self.snapshots(len(self.connections) or 1)[0]

    def snapshots(self, size: int) -> list[dict[str, Any]]:
        """The state in parts of at most `size` connections each (with their cards), so that no record of
        the log grows with the mesh; the first part also lists the monitors."""
        connections = list(self.connections.values())
        parts = []
        for at in range(0, max(len(connections), 1), size):
            chunk = connections[at : at + size]
            cards = {
                c.origin: {"card": c.card, "contracts": self.bodies.get(c.contracts or "")}
                for c in chunk
                if c.card is not None
            }
            parts.append({"connections": [c.public() for c in chunk], "cards": cards, "monitors": {}})
        parts[0]["monitors"] = {m: iso for m, (_, iso) in self.monitors.items()}
        return parts

    # -- questions -------------------------------------------------------------------------------------------
    def free_topic(self, limit: int, avoid: set[int], lane: int = 0, lanes: int = 1) -> int | None:
        """A never-used topic, the lowest of this monitor's lane (index % lanes == lane) first, so that
        monitors claiming at once rarely want the same one; else the one released longest ago; None when
        all are taken. Never-used topics only get fewer, so a cursor per lane skips the used ones."""
        index = self._cursors.get((lane, lanes), lane)
        while index < limit and (index in self.holders or index in self.released):
            index += lanes
        self._cursors[(lane, lanes)] = index
        for candidate in range(index, limit, lanes):
            if self._unused(candidate, avoid):
                return candidate
        unused = (candidate for candidate in range(limit) if self._unused(candidate, avoid))
        found = next(unused, None)  # another lane's, once ours is full
        if found is not None:
            return found
        free = (t for t in self.released if t < limit and t not in self.holders and t not in avoid)
        return min(free, key=lambda t: (self.released[t], t), default=None)

    def _unused(self, index: int, avoid: set[int]) -> bool:
        return index not in self.holders and index not in self.released and index not in avoid

    def alive(self, monitor: str, within: float) -> bool:
        seen = self.monitors.get(monitor)
        return seen is not None and time.monotonic() - seen[0] <= within

    def dead_monitors(self, within: float) -> list[str]:
        return [m for m in self.monitors if not self.alive(m, within)]

    def leader(self, within: float) -> str | None:
        """The monitor that releases orphans: the lowest id heard from `within` seconds (None: none was)."""
        return min((m for m in self.monitors if self.alive(m, within)), default=None)

    def orphans(self, me: str, within: float) -> list[Connection]:
        """Connections whose monitor (not `me`) has not been heard from `within` seconds: apps that did not
        come back to another monitor after theirs died."""
        return [c for c in self.connections.values() if c.monitor != me and not self.alive(c.monitor, within)]


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


PUBLIC_FIELDS = tuple(f.name for f in fields(Connection) if f.name not in ("card", "contracts"))


def _connection(raw: Any, max_topics: int) -> Connection | None:
    """A connection from a peer's snapshot, or None when it is not well formed."""
    if not isinstance(raw, dict) or set(raw) - {"draining", "cards"} != set(_CONNECTION_TYPES):
        return None
    if not all(isinstance(raw[k], t) and not isinstance(raw[k], bool) for k, t in _CONNECTION_TYPES.items()):
        return None
    # a monitor from before draining, or before cards, has no such key
    if not isinstance(raw.get("draining", False), bool) or not isinstance(raw.get("cards", False), bool):
        return None
    if not 0 <= raw["topic"] < max_topics or not 0 <= raw["seq"] < 2**53:
        return None
    return Connection(**raw)
