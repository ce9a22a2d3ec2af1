"""The mesh as the platform sees it (meshkit.core.RemoteRouter): pick a peer, send an event there.

Picking skips, while another instance serves the route, peers that are draining (they said they are
stopping) and peers this caller ejected as outliers (meshkit/mesh/_outliers.py).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from meshkit.core import AppError, EventEnvelope, LocalBus, MeshCounters, RoutingView
from meshkit.mesh._callers import CallerProofs
from meshkit.mesh._direct import DirectLinks
from meshkit.mesh._outliers import OutlierDetector
from meshkit.mesh._table import RoutingTable
from meshkit.mesh._transport import EventTransport

STALL_CHECK_INTERVAL = 0.1  # seconds between looks for peers that stopped answering


class MeshRouter:
    def __init__(
        self,
        table: RoutingTable,
        transport: EventTransport,
        bus: LocalBus,
        outliers: OutlierDetector | None = None,
        direct: DirectLinks | None = None,
    ) -> None:
        self.table = table
        self.transport = transport
        self.bus = bus
        self.direct = direct  # the direct path to the peers it links us to (`mesh.transport=direct`)
        self.outliers = outliers if outliers is not None else OutlierDetector()
        self._turn = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.proofs: CallerProofs | None = None  # signs requests to routes that take only some apps

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(STALL_CHECK_INTERVAL, self._check_stalls)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else asyncio.get_running_loop().time()

    def pick(self, route: str, avoid: frozenset[str] = frozenset()) -> str | None:
        origin = self.table.pick(route)
        outliers = self.outliers
        if origin is None or (
            not avoid and not self.table.draining and not outliers.ejected and not outliers.probation
        ):
            return origin  # the usual case: every peer in rotation
        now = self._now()
        origins = [o for o in self.table.origins(route) if o not in avoid]
        usable = [o for o in origins if o not in self.table.draining and not self.outliers.is_ejected(o, now)]
        if not usable:  # only draining or ejected instances: they still serve, better than nothing
            usable = origins
        if not usable:
            return None
        return origin if origin in usable else usable[next(self._turn) % len(usable)]

    def origins(self, route: str) -> list[str]:
        return self.table.origins(route)

    def retryable(self, route: str) -> bool:
        return self.table.retryable(route)

    def send(self, origin: str, event: EventEnvelope) -> None:
        link = self.direct.link(origin) if self.direct is not None else None
        if link is not None:
            link.send_event(event)
            if event.reply_to == self.bus.inbox:
                link.prune(self.bus.waiting)
        else:
            peer = self.table.peers.get(origin)
            topic = peer.topic if peer is not None else self.transport.return_addresses.get(origin)
            if topic is None:
                raise AppError(404, f"Origin {origin} is not reachable")
            proofs = self.proofs
            if proofs is not None and proofs.restricted(origin, event.to):
                proofs.sign(event, origin)  # a route that takes only some apps: say who we are
            self.transport.send_event(topic, origin, event, batch=peer is not None and peer.batches)
        if event.reply_to == self.bus.inbox and event.cid is not None:  # a request of ours
            self.outliers.sent(origin, event.to or "", self._now())
        self.bus.note_target(event, origin)

    def outcome(self, origin: str, route: str, status: int | None, elapsed: float) -> None:
        self.outliers.answered(origin, route, status, elapsed, self._now())

    def forget(self, origin: str) -> None:
        self.outliers.forget(origin)

    def _check_stalls(self) -> None:
        self._timer = None
        if self.outliers.watching:
            for origin in self.outliers.stalled(self._now()):
                message = f"Peer {origin} stopped answering: taken out of rotation"
                self.bus.fail_requests_to(origin, message, stalled=True)
        if self._loop is not None:
            self._timer = self._loop.call_later(STALL_CHECK_INTERVAL, self._check_stalls)

    def describe(self) -> RoutingView:
        routes, peers = self.table.describe()
        now = self._now()
        for origin, info in peers.items():
            info["ejected"] = self.outliers.is_ejected(origin, now)
            if self.direct is not None:
                info.update(self.direct.path(origin))
            else:
                info["path"] = "broker"
        return routes, peers

    def contracts(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.table.contracts()

    def counters(self) -> MeshCounters:
        transport = self.transport
        links = list(self.direct.links.values()) if self.direct is not None else []
        return MeshCounters(
            transport.sent,
            transport.received,
            transport.skipped,
            transport.pending_sends,
            self.outliers.ejections,
            (self.direct.sent if self.direct is not None else 0) + sum(link.sent for link in links),
            transport.received_direct,
            len(links),
        )
