"""The JSON a monitor sends of its group's apps, made once per app and change, not once per recipient.

A join storm of N apps means about N^2 member notices across the group, and a newcomer's list of cards is
as long as its group: encoding each app's notice (and each contracts map) once, and joining ready-made texts
per recipient, keeps the monitor's share of that to copying strings (docs/protocol/presence.md#cards).
"""

from __future__ import annotations

import json
from typing import Any

from meshkit.mesh import TopicLayout
from presence_server._sessions import Notice
from presence_server._state import Connection, MeshState


class CardTexts:
    def __init__(self, state: MeshState, layout: TopicLayout) -> None:
        self.state = state
        self.layout = layout
        self._members: dict[str, str] = {}  # origin -> its member notice
        self._plain: dict[str, str] = {}  # origin -> its member notice without the card
        self._pairs: dict[str, str] = {}  # origin -> '"origin": "key"', for a ready's `members`
        self._bodies: dict[str, str] = {}  # digest -> the contracts map

    def member(self, connection: Connection) -> Notice:
        """The `member` notice of an app: its key, and its card with its virtual topic when it has one."""
        text = self._members.get(connection.origin)
        if text is None:
            notice: dict[str, Any] = {"type": "member", "origin": connection.origin, "key": connection.key}
            if connection.card is not None:
                notice["topic"] = self.layout.virtual(connection.topic).name
                notice["card"] = connection.card
            text = self._members[connection.origin] = json.dumps(notice)
        return text, connection.contracts

    def plain_member(self, connection: Connection) -> Notice:
        """The `member` notice for an app without cards: the key alone (it would ignore the card)."""
        text = self._plain.get(connection.origin)
        if text is None:
            notice = {"type": "member", "origin": connection.origin, "key": connection.key}
            text = self._plain[connection.origin] = json.dumps(notice)
        return text, None

    def forget(self, origin: str) -> None:
        """The app's claim, card or leave changed what its notice says."""
        self._members.pop(origin, None)
        self._plain.pop(origin, None)
        self._pairs.pop(origin, None)

    def body(self, digest: str) -> str | None:
        contracts = self.state.bodies.get(digest)
        if contracts is None:
            self._bodies.pop(digest, None)
            return None
        text = self._bodies.get(digest)
        if text is None:
            text = self._bodies[digest] = json.dumps(contracts)
        return text

    def prune(self) -> None:
        """Drop the texts of contracts no card names any more."""
        for digest in [d for d in self._bodies if d not in self.state.bodies]:
            del self._bodies[digest]

    def ready(self, topic: str, monitor: str, group: int, origin: str) -> tuple[str, list[Notice]]:
        """The `ready` of an app with cards, and the member notices of its group's cards that follow it."""
        pairs, cards, legacy = [], [], []
        for other in self.state.connections.values():
            if other.group != group:
                continue
            if other.card is not None:  # its own too: every newcomer's first frames are then the same texts
                cards.append(self.member(other))
            if other.origin == origin:
                continue
            pair = self._pairs.get(other.origin)
            if pair is None:
                pair = self._pairs[other.origin] = f"{json.dumps(other.origin)}: {json.dumps(other.key)}"
            pairs.append(pair)
            if not other.cards:
                legacy.append(other.origin)
        head = json.dumps(
            {"type": "ready", "topic": topic, "monitor": monitor, "cards": True, "legacy": legacy}
        )
        return f'{head[:-1]}, "members": {{{", ".join(pairs)}}}}}', cards
