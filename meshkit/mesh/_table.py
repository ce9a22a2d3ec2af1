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
    idempotent: set[str] = field(default_factory=set)  # of its routes, those it declares safe to retry
    draining: bool = False  # it is stopping: no new requests while another instance serves the route
    contracts: dict[str, dict[str, Any]] = field(default_factory=dict)  # route -> contract, as it published
    allow: dict[str, list[str]] = field(default_factory=dict)  # route -> the app names it takes calls from

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "personality": self.personality,
            "topic": self.topic.name,
            "draining": self.draining,
            "idempotent": sorted(self.idempotent & self.routes),
            "allow": {route: names for route, names in sorted(self.allow.items()) if route in self.routes},
        }


class RoutingTable:
    """Peers and their routes, as learnt from joins, leaves and route updates on the control channel."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self._routes: dict[str, list[str]] = {}
        self._turns: dict[str, itertools.count[int]] = {}
        self.draining: set[str] = set()  # origins of peers that said they are stopping
        self._idempotent: dict[str, bool] = {}  # route -> declared safe to retry (kept after its peers leave)

    def join(self, peer: Peer) -> bool:
        """Add or refresh a peer; True when it is new."""
        known = self.peers.get(peer.origin)
        if known is None:
            log.info("Peer %s joins (%s %s)", peer.origin, peer.name, peer.version)
            self.peers[peer.origin] = Peer(
                peer.origin,
                peer.name,
                peer.version,
                peer.personality,
                peer.topic,
                batches=peer.batches,
                draining=peer.origin in self.draining,
            )
        else:
            known.topic, known.batches = peer.topic, peer.batches
        self.update(
            peer.origin,
            add=peer.routes,
            remove=(known.routes - peer.routes) if known else set(),
            idempotent=peer.idempotent,
            allow=peer.allow,
        )
        return known is None

    def update(
        self,
        origin: str,
        *,
        add: set[str] | frozenset[str] = frozenset(),
        remove: set[str] | frozenset[str] = frozenset(),
        idempotent: set[str] | frozenset[str] = frozenset(),
        allow: dict[str, list[str]] | None = None,
    ) -> None:
        """`idempotent`: which of the routes in `add` their owner declares safe to retry; `allow`: of
        them, those that take calls only from some apps, and which."""
        peer = self.peers.get(origin)
        if peer is None:
            return
        for route in add:
            if allow and route in allow:
                peer.allow[route] = allow[route]
            else:
                peer.allow.pop(route, None)
            safe = route in idempotent
            self._idempotent[route] = safe
            if safe:
                peer.idempotent.add(route)
            else:
                peer.idempotent.discard(route)
        for route in sorted(add - peer.routes):
            peer.routes.add(route)
            self._routes.setdefault(route, []).append(origin)
            log.info("%s (%s, %s.%s) registered", route, peer.name, peer.personality, origin)
        for route in sorted(remove & peer.routes):
            self._unregister(peer, route)

    def leave(self, origin: str) -> Peer | None:
        self.draining.discard(origin)
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

    def drain(self, origin: str) -> None:
        """The peer is stopping: it serves what it has, and gets no new requests while others can."""
        self.draining.add(origin)  # also before its join is read: the join then finds it draining
        peer = self.peers.get(origin)
        if peer is not None and not peer.draining:
            peer.draining = True
            log.info("Peer %s is draining (%s %s): no new requests to it", origin, peer.name, peer.version)

    def publish_contracts(self, origin: str, contracts: dict[str, dict[str, Any]]) -> None:
        """What a peer says its routes take and return (its `contracts` message): replaces what it said."""
        peer = self.peers.get(origin)
        if peer is not None:
            peer.contracts = contracts

    def contracts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """origin -> route -> contract, for the routes each peer serves now."""
        return {
            origin: {r: c for r, c in peer.contracts.items() if r in peer.routes}
            for origin, peer in self.peers.items()
            if peer.contracts
        }

    def retryable(self, route: str) -> bool:
        return self._idempotent.get(route, False)

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
