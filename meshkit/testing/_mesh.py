"""TestMesh: several meshkit apps meshed in one process, for a user's tests, with no broker or monitor.

Each app is a platform of its own (its own origin, functions and routing table), equipped as `install`
equips one, and joined to the mesh through the in-memory connector on a broker of this mesh's own. The
mesh's own code runs as on Kafka (joins, vouching, signed control messages, routing, segments, batches);
only the presence monitors are replaced, by an in-process control plane (`_control.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.core import Handler, Platform, make_spec
from meshkit.http import equip
from meshkit.mesh import MeshNode, join_mesh, mesh_settings
from meshkit.testing._control import ControlPlane
from meshkit.testing._platform import Functions, isolated_config, specs_of

#: what every app of a TestMesh gets unless its properties say otherwise
TEST_PROPERTIES = {
    "cloud.connector": "none",
    "connector.watchdog.exit.after": "0",  # never os._exit() the test run
    "drain.quiet": "0.02",  # records travel in loop callbacks here: a drain is quiet at once
}


class TestMesh:
    """Apps meshed in one process: ``async with TestMesh() as mesh: orders = await mesh.app("orders", ...)``.

    `properties` apply to every app (each app's own win over them); the topic layout and group count come
    from them as in a real mesh (`app.partitions.per.topic`, `max.virtual.topics`, `max.closed.user.groups`).
    `timeout` bounds each wait for the mesh to settle (a join or a leave seen by every app).
    """

    __test__ = False  # not a test class, whatever pytest makes of the name

    def __init__(self, properties: Mapping[str, str] | None = None, *, timeout: float = 10.0) -> None:
        self.properties = {**TEST_PROPERTIES, **(properties or {})}
        self.timeout = timeout
        layout, _, _ = mesh_settings(isolated_config(self.properties))
        self.broker = MemoryBroker()
        self.control = ControlPlane(layout)
        self._nodes: dict[str, MeshNode] = {}  # origin -> the app's node

    async def __aenter__(self) -> TestMesh:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every app still running."""
        for node in list(self._nodes.values()):
            await self._stop(node.platform)

    # -- apps ---------------------------------------------------------------------------------------------
    @property
    def apps(self) -> list[Platform]:
        return [node.platform for node in self._nodes.values()]

    async def app(
        self,
        name: str,
        functions: Functions | None = None,
        *,
        scan: Sequence[str] = (),
        properties: Mapping[str, str] | None = None,
        config_dir: str | Path | None = None,
    ) -> Platform:
        """Start an app in the mesh; returns once it and every app of its group know each other's routes.

        Its functions: `functions` (a FunctionRegistry or FunctionSpecs), else those `@route` declared in
        the packages of `scan` (imported first), else every `@route` function declared, as `create_app`.
        Its configuration: the mesh's properties and `properties`, over `config_dir`'s application.properties
        when given; no environment variables or -D arguments, so that a test gives the same result anywhere.
        """
        overrides = {**self.properties, "application.name": name, **(properties or {})}
        config = isolated_config(overrides, config_dir)
        platform = Platform(config, name=name, functions=specs_of(functions, scan))
        equip(platform)
        await platform.start()
        try:
            node = await join_mesh(
                platform, MemoryConnector(broker=self.broker), presence=self.control.presence
            )
        except BaseException:
            await platform.stop()
            raise
        self._nodes[platform.origin] = node
        await self.settled()
        return platform

    async def stop(self, app: Platform, *, drain: bool = True) -> None:
        """Stop an app as SIGTERM would: it drains (peers stop sending it new requests, it finishes what it
        has), then leaves; returns once no other app routes to it. `drain=False`: it leaves at once, as a
        killed app does (what it had in flight fails, or is sent again if safe to retry)."""
        if drain and app.running:
            await app.drain()
        await self._stop(app)
        nodes = self._nodes.values()
        await self.until(
            lambda: not any(app.origin in node.table.peers for node in nodes),
            f"{app.name} gone from every routing table",
        )

    async def _stop(self, app: Platform) -> None:
        self._nodes.pop(app.origin, None)
        if app.running:
            await app.stop()

    def node(self, app: Platform) -> MeshNode:
        """The app's membership of the mesh: its routing table (`.table`), transport and presence."""
        return self._nodes[app.origin]

    # -- stubs --------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def stub(self, route: str, handler: Handler) -> AsyncIterator[None]:
        """Serve `route` with `handler` for the block: in every app that has the route, else in a stub app
        of its own that joins the mesh for the block. Callers need no change; the route stays advertised."""
        serving = [app for app in self.apps if app.has_local(route)]
        if not serving:
            stub = await self.app(f"stub-{route}", [make_spec(route, handler)])
            try:
                yield
            finally:
                await self.stop(stub)
            return
        replaced = [(app, app.replace(route, handler)) for app in serving]
        try:
            yield
        finally:
            for app, spec in replaced:
                if app.running and app.has_local(route):
                    app.replace(route, spec.handler)

    # -- the mesh settling --------------------------------------------------------------------------------
    def topics(self) -> dict[str, str]:
        """origin -> the virtual topic the control plane gave it."""
        return self.control.topics()

    async def settled(self) -> None:
        """Until every app's routing table holds every public route of each other app of its group."""
        await self.until(self._knows_all, "every app knowing every other's routes")

    def _knows_all(self) -> bool:
        for origin, node in self._nodes.items():
            for other, peer in self._nodes.items():
                if other == origin or peer.group != node.group:
                    continue
                known = node.table.peers.get(other)
                if known is None or not set(peer.platform.public_routes()) <= known.routes:
                    return False
        return True

    async def until(self, condition: Callable[[], object], what: str = "the condition") -> None:
        """Let the mesh's records travel until `condition()` is true (a broadcast arrived, say); TimeoutError
        after the mesh's `timeout`."""
        deadline = time.monotonic() + self.timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {self.timeout:g} s in the test mesh")
            await asyncio.sleep(0.001)  # records travel in loop callbacks: let them run
