"""The distributed routing table: which peers serve which public routes, balanced round robin."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from meshkit.core import RoutingView
from meshkit.mesh._topics import VirtualTopic

log = logging.getLogger("meshkit.mesh.registry")


@dataclass
class Peer:
    origin: str
    name: str
    version: str
    personality: str
    topic: VirtualTopic
    routes: set[str] = field(default_factory=set)
    batches: bool = False  # it takes batch records (its join said so; an app from before them does not)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "personality": self.personality,
            "topic": self.topic.name,
        }


class RoutingTable:
    """Peers and their routes, as learnt from joins, leaves and route updates on the control channel."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self._routes: dict[str, list[str]] = {}
        self._turns: dict[str, itertools.count[int]] = {}

    def join(self, peer: Peer) -> bool:
        """Add or refresh a peer; True when it is new."""
        known = self.peers.get(peer.origin)
        if known is None:
            log.info("Peer %s joins (%s %s)", peer.origin, peer.name, peer.version)
            self.peers[peer.origin] = Peer(
                peer.origin, peer.name, peer.version, peer.personality, peer.topic, batches=peer.batches
            )
        else:
            known.topic, known.batches = peer.topic, peer.batches
        self.update(peer.origin, add=peer.routes, remove=(known.routes - peer.routes) if known else set())
        return known is None

    def update(
        self,
        origin: str,
        *,
        add: set[str] | frozenset[str] = frozenset(),
        remove: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        peer = self.peers.get(origin)
        if peer is None:
            return
        for route in sorted(add - peer.routes):
            peer.routes.add(route)
            self._routes.setdefault(route, []).append(origin)
            log.info("%s (%s, %s.%s) registered", route, peer.name, peer.personality, origin)
        for route in sorted(remove & peer.routes):
            self._unregister(peer, route)

    def leave(self, origin: str) -> Peer | None:
        peer = self.peers.pop(origin, None)
        if peer is None:
            return None
        log.info("Peer %s left (%s %s)", origin, peer.name, peer.version)
        for route in sorted(peer.routes):
            self._unregister(peer, route)
        return peer

    def _unregister(self, peer: Peer, route: str) -> None:
        peer.routes.discard(route)
        origins = self._routes.get(route, [])
        if peer.origin in origins:
            origins.remove(peer.origin)
        if not origins:
            self._routes.pop(route, None)
            self._turns.pop(route, None)
        log.info("%s %s unregistered", route, peer.origin)

    def pick(self, route: str) -> str | None:
        origins = self._routes.get(route)
        if not origins:
            return None
        turn = self._turns.get(route)
        if turn is None:
            turn = self._turns[route] = itertools.count()
        return origins[next(turn) % len(origins)]

    def origins(self, route: str) -> list[str]:
        return list(self._routes.get(route, ()))

    def describe(self) -> RoutingView:
        routes = {
            route: {o: f"{self.peers[o].name}, {self.peers[o].personality}" for o in origins}
            for route, origins in self._routes.items()
        }
        return routes, {origin: peer.describe() for origin, peer in self.peers.items()}
