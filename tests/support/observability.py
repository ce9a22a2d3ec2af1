"""Helpers for the tracing, metrics and logging tests.

Two apps meshed in the test's process (meshkit.testing.TestMesh: the real event transport over an in-memory
broker), and a function that collects the trace records forwarded to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from meshkit import FunctionRegistry, FunctionSpec, Platform
from meshkit.mesh._transport import EventTransport
from meshkit.testing import TestMesh

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
    """Apps A and B in one TestMesh, each knowing the other's routes; with their event transports."""
    async with TestMesh(properties) as mesh:
        a = await mesh.app("app-a", first)
        b = await mesh.app("app-b", second)
        yield a, b, [mesh.node(a).transport, mesh.node(b).transport]
