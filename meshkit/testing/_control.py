"""The control plane of a TestMesh: what presence monitors do for a real mesh, done in the process.

It hands each app a virtual topic (a never-used one first, then the one released longest ago), vouches for
each app's public key to the others of its closed user group, and tells them when an app has gone: the
`ready`, `member` and `gone` messages of docs/protocol/presence.md, given to each node's Presence directly
instead of over a websocket. Everything else (joins, routes, events) travels over the connector as usual.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass

from meshkit.core import new_origin
from meshkit.mesh import Member, OnNotice, OnReady, TopicLayout

log = logging.getLogger("meshkit.testing")


class MeshFull(Exception):
    """Every virtual topic of the layout is held."""


@dataclass
class _Held:
    member: Member
    topic: int
    presence: InProcessPresence
    draining: bool = False


class ControlPlane:
    """Virtual topics and vouching for the apps of one TestMesh."""

    def __init__(self, layout: TopicLayout) -> None:
        self.layout = layout
        self.id = new_origin()  # as a monitor's id: what `ready` names
        self._held: dict[str, _Held] = {}  # origin -> what it holds
        self._released: dict[int, int] = {}  # topic -> when it was released (a counter: an order, not a time)
        self._clock = itertools.count(1)

    def presence(self, member: Member, on_ready: OnReady, on_notice: OnNotice) -> InProcessPresence:
        """A PresenceFactory: the node's link to this control plane."""
        return InProcessPresence(self, member, on_ready, on_notice)

    def topics(self) -> dict[str, str]:
        """origin -> the virtual topic it holds (what a monitor's /info lists as connections)."""
        return {origin: self.layout.virtual(held.topic).name for origin, held in self._held.items()}

    # -- what a monitor does on a hello and on a close ----------------------------------------------------
    def admit(self, presence: InProcessPresence) -> tuple[str, dict[str, str]]:
        """Give the app a topic and vouch for it to its group: the topic, and the keys of the group's rest."""
        member = presence.member
        if member.origin in self._held:
            raise ValueError(f"origin {member.origin} is already connected")
        taken = {held.topic for held in self._held.values()}
        free = [index for index in range(self.layout.max_virtual_topics) if index not in taken]
        if not free:
            raise MeshFull(
                f"the mesh is full: all {self.layout.max_virtual_topics} virtual topics are in use"
            )
        topic = min(free, key=lambda index: (self._released.get(index, 0), index))
        members = {
            origin: held.member.public_key
            for origin, held in self._held.items()
            if held.member.group == member.group
        }
        self._held[member.origin] = _Held(member, topic, presence)
        notice = {"type": "member", "origin": member.origin, "key": member.public_key}
        self._tell_group(member, notice)
        for origin, held in self._held.items():  # the newcomer hears who is stopping, after `members`
            if held.draining and held.member.group == member.group:
                presence.call_soon({"type": "draining", "origin": origin})
        return self.layout.virtual(topic).name, members

    def drain(self, member: Member) -> None:
        held = self._held.get(member.origin)
        if held is not None and not held.draining:
            held.draining = True
            self._tell_group(member, {"type": "draining", "origin": member.origin})

    def release(self, member: Member, reason: str) -> None:
        held = self._held.pop(member.origin, None)
        if held is None:
            return
        self._released[held.topic] = next(self._clock)
        topic = self.layout.virtual(held.topic)
        log.info("%s released by %s, %s, %s", topic, member.origin, member.name, member.version)
        self._tell_group(member, {"type": "gone", "origin": member.origin, "reason": reason})

    def _tell_group(self, about: Member, notice: dict[str, str]) -> None:
        for origin, held in list(self._held.items()):
            if origin != about.origin and held.member.group == about.group:
                held.presence.notify(notice)


class InProcessPresence:
    """A node's Presence in a TestMesh (meshkit.mesh.Presence)."""

    def __init__(self, plane: ControlPlane, member: Member, on_ready: OnReady, on_notice: OnNotice) -> None:
        self.plane = plane
        self.member = member
        self.on_ready = on_ready
        self.on_notice = on_notice
        self.connected = asyncio.Event()

    async def start(self, wait: float) -> bool:
        topic, members = self.plane.admit(self)
        try:
            await asyncio.wait_for(self.on_ready(topic, self.plane.id, members), wait)
        except BaseException:
            self.plane.release(self.member, "failed to start")
            raise
        self.connected.set()
        return True

    async def drain(self) -> None:
        self.plane.drain(self.member)

    async def update(self) -> None:
        return None  # no cards here: peers hear route changes from the node's routes messages

    def call_soon(self, notice: dict[str, str]) -> None:
        asyncio.get_running_loop().call_soon(self.notify, notice)

    async def close(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self.plane.release(self.member, "left")

    def notify(self, notice: dict[str, str]) -> None:
        # admit() and the node's reading of `members` run in one step, so no notice can come before them
        self.on_notice(dict(notice))
