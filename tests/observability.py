"""Helpers for the tracing, metrics and logging tests.

Two platforms joined by the real event transport over an in-memory broker (no presence monitor: each knows the
other as a peer), and a function that collects the trace records forwarded to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from meshkit import FunctionRegistry, FunctionSpec, Platform
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import Peer, RoutingTable, TopicLayout
from meshkit.mesh._table import MeshRouter
from meshkit.mesh._transport import EventTransport

FORWARDER = "trace.collector"


def trace_collector(registry: FunctionRegistry) -> list[dict[str, Any]]:
    """Declare `trace.collector` in `registry`; the trace records it receives land in the list."""
    records: list[dict[str, Any]] = []

    @registry.route(FORWARDER, instances=4)
    async def collect(headers: dict[str, str], body: Any) -> None:
        records.append({**body, "forwarded_with_trace": headers.get("my_trace_id")})

    return records


@asynccontextmanager
async def two_platform_mesh(
    first: Iterable[FunctionSpec], second: Iterable[FunctionSpec], **properties: str
) -> AsyncIterator[tuple[Platform, Platform, list[EventTransport]]]:
    """Platforms A and B on virtual topics 0 and 1 of one memory broker, each routing to the other."""
    from tests.bus import running_platform

    layout = TopicLayout()
    async with (
        running_platform(first, name="app-a", **properties) as a,
        running_platform(second, name="app-b", **properties) as b,
    ):
        broker = MemoryBroker()
        transports = []
        connectors = []
        for index, platform in enumerate((a, b)):
            connector = MemoryConnector(broker=broker)
            await connector.start()
            await connector.ensure_topic(layout.virtual(index).topic, layout.partitions_per_topic)
            transport = EventTransport(
                platform,
                connector,
                segment_size=64 * 1024,
                max_event_bytes=1024 * 1024,
                on_control=lambda message: None,
                layout=layout,
            )
            await transport.listen(layout.virtual(index))
            transports.append(transport)
            connectors.append(connector)
        for index, (platform, other) in enumerate(((a, b), (b, a))):
            table = RoutingTable()
            table.join(
                Peer(
                    other.origin,
                    other.name,
                    "1.0",
                    "APP",
                    layout.virtual(1 - index),
                    set(other.public_routes()),
                )
            )
            platform.remote = MeshRouter(table, transports[index])
        try:
            yield a, b, transports
        finally:
            for platform in (a, b):
                platform.remote = None
            for transport, connector in zip(transports, connectors, strict=True):
                await transport.close()
                await connector.close()
