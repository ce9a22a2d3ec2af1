"""The seed's walk-through through every connector and control plane, in one process.

Two platforms, A and B, join the mesh: B learns A's routes, calls A, broadcasts to A, is refused A's private
function, sends a body that travels in segments, runs the loopback health check, shrugs off garbage on its
own partition, and drops A's routes when A stops, as the control plane drops A's connection.

The control plane is a presence monitor served by uvicorn as a task of this loop, over the connector under
test: `none` the in-memory broker (the process-wide default, shared by the monitor and both apps), `kafka`
the session's development broker, `hazelcast` the member named by HAZELCAST_MEMBERS (skipped without). And
`testing` is meshkit.testing's TestMesh (its in-process control plane, a broker of its own): what passes
here on it behaves the same on a broker.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import pytest
import uvicorn

from meshkit import AppConfig, AppError, FunctionRegistry, Platform, PostOffice
from meshkit.connectors import Connector, make_connector
from meshkit.connectors.memory import MemoryConnector
from meshkit.devbroker import DevBroker, free_port
from meshkit.mesh import MeshNode, join_mesh
from meshkit.mesh._frames import control_record
from meshkit.testing import TestMesh
from presence_server.main import create_monitor_app
from tests.connectors.test_connector_contract import HAZELCAST_MARKS, HAZELCAST_MEMBERS
from tests.support.eventually import eventually

# Upper bound for anything the mesh does "at once" (a join, a route update, a leave).
BOUND = 15.0
LARGE = 300 * 1024


@dataclass
class Backend:
    kind: str
    properties: dict[str, str]
    connector: Callable[[], Connector | None] = lambda: None  # None: join_mesh builds it from properties
    plane: str = "monitor"  # the control plane: presence monitors, or a TestMesh's own


@pytest.fixture(
    params=[
        pytest.param("none"),
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("hazelcast", marks=HAZELCAST_MARKS),
        pytest.param("testing"),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    kind: str = request.param
    if kind == "testing":  # the TestMesh's apps are on the in-memory connector
        return Backend("none", {"cloud.connector": "none"}, plane="testing")
    if kind == "none":
        # The monitor's MemoryConnector() and the apps' share the process-wide default broker.
        return Backend(kind, {"cloud.connector": "none"}, MemoryConnector)
    if kind == "kafka":
        broker: DevBroker = request.getfixturevalue("kafka_broker")
        return Backend(kind, {"cloud.connector": "kafka", "bootstrap.servers": broker.bootstrap})
    return Backend(
        kind,
        {
            "cloud.connector": "hazelcast",
            "hazelcast.cluster.members": HAZELCAST_MEMBERS,
            "hazelcast.cluster.name": os.environ.get("HAZELCAST_CLUSTER_NAME", "dev"),
        },
    )


@dataclass
class Monitor:
    url: str
    server: uvicorn.Server
    http: httpx.AsyncClient

    @property
    def presence_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/presence"

    async def info(self) -> dict[str, Any]:
        response = await self.http.get(self.url + "/info")
        response.raise_for_status()
        info: dict[str, Any] = response.json()["additional_info"]
        return info

    async def connections(self) -> set[str]:
        return {c["origin"] for c in (await self.info())["connections"]}


class ControlPlane(Protocol):
    """What the walk-through asks of the control plane under test."""

    async def start_app(self, name: str, registry: FunctionRegistry) -> App: ...

    async def connections(self) -> set[str]:
        """The origins it holds a connection of."""

    async def holders(self) -> set[str]:
        """The origins it hands a virtual topic to."""


@dataclass
class MonitorPlane:
    backend: Backend
    monitor: Monitor

    async def start_app(self, name: str, registry: FunctionRegistry) -> App:
        return await start_app(name, registry, self.backend, self.monitor)

    async def connections(self) -> set[str]:
        return await self.monitor.connections()

    async def holders(self) -> set[str]:
        lines = (await self.monitor.info())[
            "virtual_topics"
        ]  # "multiplex.0001-000 -> <origin>, <name> v<version>"
        return {line.split(" -> ", 1)[1].split(",", 1)[0] for line in lines}


@dataclass
class InProcessPlane:
    mesh: TestMesh

    async def start_app(self, name: str, registry: FunctionRegistry) -> App:
        platform = await self.mesh.app(name, registry, properties={"presence.keepalive": "1"})
        return App(platform, self.mesh.node(platform))

    async def connections(self) -> set[str]:
        return set(self.mesh.topics())

    async def holders(self) -> set[str]:
        return set(self.mesh.topics())


@pytest.fixture
async def control(backend: Backend, monitor: Monitor | None) -> AsyncIterator[ControlPlane]:
    if monitor is not None:
        yield MonitorPlane(backend, monitor)
        return
    async with TestMesh() as mesh:
        yield InProcessPlane(mesh)


@pytest.fixture
async def monitor(backend: Backend) -> AsyncIterator[Monitor | None]:
    if backend.plane != "monitor":
        yield None
        return
    port = free_port()
    app = create_monitor_app(properties=backend.properties)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve(), name="test:presence-monitor")

    def started() -> bool:
        # uvicorn's flag, which no event signals
        if not server.started and task.done():
            task.result()  # raises what stopped it, if anything did
            raise AssertionError("the presence monitor did not start (its log says why)")
        return server.started

    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        try:
            await eventually(started, timeout=BOUND, what="the presence monitor started")
            yield Monitor(f"http://127.0.0.1:{port}", server, http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, BOUND)


@dataclass
class App:
    platform: Platform
    node: MeshNode
    broadcasts: list[Any] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.platform.origin


async def start_app(name: str, registry: FunctionRegistry, backend: Backend, monitor: Monitor) -> App:
    config = AppConfig.load(
        argv=[],
        environ={},
        overrides={
            "application.name": name,
            "presence.url": monitor.presence_url,
            "presence.keepalive": "1",
            **backend.properties,
        },
    )
    platform = Platform(config, name=name, functions=list(registry))
    await platform.start()
    try:
        node = await join_mesh(platform, backend.connector() or make_connector(config))
    except BaseException:
        await platform.stop()
        raise
    assert node.presence.connected.is_set(), f"{name} did not reach the presence monitor"
    return App(platform, node)


def app_a_functions(a: list[App]) -> tuple[FunctionRegistry, list[Any]]:
    """A's functions; they answer with A's origin (known once A's platform exists: `a[0]`)."""
    registry = FunctionRegistry()
    received: list[Any] = []

    @registry.route("demo.route")
    async def demo(headers: dict[str, str], body: Any, instance: int) -> Any:
        return {"id": body.get("id") if isinstance(body, dict) else None, "origin": a[0].origin}

    @registry.route("demo.echo")
    async def echo(headers: dict[str, str], body: Any, instance: int) -> Any:
        return body

    @registry.route("demo.notify")
    async def notify(headers: dict[str, str], body: Any, instance: int) -> None:
        received.append(body)

    @registry.route("demo.secret", private=True)
    async def secret(headers: dict[str, str], body: Any, instance: int) -> str:
        return "never from outside"

    return registry, received


async def test_the_walk_through_over_the_connector(backend: Backend, control: ControlPlane) -> None:
    holder: list[App] = []
    registry_a, notified = app_a_functions(holder)
    a = await control.start_app("app-a", registry_a)
    holder.append(a)
    b: App | None = None
    try:
        b = await control.start_app("app-b", FunctionRegistry())
        po = PostOffice(b.platform)

        # -- join: B learns A's public routes, never its private one ----------------------------------------
        await eventually(lambda: po.search("demo.route") == [a.origin], timeout=BOUND, what="A's routes at B")
        assert po.exists("demo.route", "demo.echo", "demo.notify")
        assert not po.exists("demo.secret")
        assert {a.origin, b.origin} <= await control.connections()

        # -- an RPC across the connector answers with A's origin ---------------------------------------------
        reply = await po.request("demo.route", {"id": 1}, timeout=BOUND)
        assert reply.status == 200
        assert reply.body == {"id": 1, "origin": a.origin}

        # -- broadcast reaches A --------------------------------------------------------------------------
        await po.broadcast("demo.notify", {"hello": "everyone"})
        await eventually(
            lambda: notified == [{"hello": "everyone"}], timeout=BOUND, what="the broadcast at A"
        )

        # -- A's private function is refused from B, by name and addressed to A ----------------------------
        with pytest.raises(AppError) as refused:
            await po.request("demo.secret", timeout=BOUND)
        assert refused.value.status == 404
        direct = await po.request(f"demo.secret@{a.origin}", timeout=BOUND)
        assert direct.status == 403
        assert "private" in str(direct.body)

        # -- a body far over 64 KB travels in segments and comes back whole --------------------------------
        large = os.urandom(LARGE)
        echoed = await po.request("demo.echo", large, timeout=BOUND)
        assert echoed.status == 200
        assert echoed.body == large

        # -- the loopback health check through the connector ----------------------------------------------
        health = await po.request("cloud.connector.health", headers={"type": "health"}, timeout=BOUND)
        assert health.status == 200, health.body
        assert re.fullmatch(r"Loopback test took \d+ ms", health.body)
        info = await po.request("cloud.connector.health", headers={"type": "info"}, timeout=BOUND)
        assert info.body["service"] == b.node.connector.name == backend.kind
        assert info.body["href"] == b.node.connector.href

        # -- garbage on B's own partition is skipped and B keeps working ------------------------------------
        own = b.node.transport.topic
        assert own is not None
        skipped = b.node.transport.skipped
        stranger = "20260101" + "0" * 32
        for record in (
            os.urandom(256),
            b"\xc1 never MsgPack",
            control_record(stranger, {"type": "loopback", "id": "not-for-b"}),
        ):
            await b.node.connector.publish(own.topic, own.partition, record)
        await eventually(
            lambda: b.node.transport.skipped >= skipped + 3, timeout=BOUND, what="three skipped records at B"
        )
        again = await po.request("demo.route", {"id": 2}, timeout=BOUND)
        assert again.body == {"id": 2, "origin": a.origin}

        # -- A stops: B drops A's routes, the control plane drops A's connection ----------------------------
        await a.platform.stop()
        await eventually(lambda: not po.exists("demo.route"), timeout=10, what="A's routes gone at B")
        assert po.search("demo.echo") == []

        async def a_gone() -> bool:
            return a.origin not in await control.connections()

        await eventually(a_gone, timeout=10, what="A's connection gone at the control plane")
        assert b.origin in await control.connections()
        holders = await control.holders()
        assert b.origin in holders and a.origin not in holders
    finally:
        if b is not None:
            await b.platform.stop()
        await a.platform.stop()
