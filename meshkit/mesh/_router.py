"""The mesh as the platform sees it (meshkit.core.RemoteRouter): pick a peer, send an event there."""

from __future__ import annotations

from meshkit.core import AppError, EventEnvelope, LocalBus, MeshCounters, RoutingView
from meshkit.mesh._table import RoutingTable
from meshkit.mesh._transport import EventTransport


class MeshRouter:
    def __init__(self, table: RoutingTable, transport: EventTransport, bus: LocalBus) -> None:
        self.table = table
        self.transport = transport
        self.bus = bus

    def pick(self, route: str) -> str | None:
        return self.table.pick(route)

    def origins(self, route: str) -> list[str]:
        return self.table.origins(route)

    def send(self, origin: str, event: EventEnvelope) -> None:
        peer = self.table.peers.get(origin)
        topic = peer.topic if peer is not None else self.transport.return_addresses.get(origin)
        if topic is None:
            raise AppError(404, f"Origin {origin} is not reachable")
        self.transport.send_event(topic, origin, event, batch=peer is not None and peer.batches)
        self.bus.note_target(event, origin)

    def describe(self) -> RoutingView:
        return self.table.describe()

    def counters(self) -> MeshCounters:
        transport = self.transport
        return MeshCounters(transport.sent, transport.received, transport.skipped, transport.pending_sends)
