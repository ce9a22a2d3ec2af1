"""A mesh of real processes, one host (network namespace) each: the broker, the monitors, the apps.

    with NetMesh(network, tmp_path) as mesh:
        m1 = mesh.monitor("m1")
        caller = mesh.app("caller", CALLER_APP, [m1])
        network.cut(caller.host, mesh.broker)

Tansu listens on its host's address (port 9092), every monitor and app on its own (port 8080): the hosts'
ports never collide, and everyone reaches everyone by address. Nodes are tests.support.mesh_fixtures'
Node, so its helpers (routes_of, monitor_info, ...) apply; the test reaches them over the observer link.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from meshkit.devbroker import tansu_binary
from tests.support.mesh_fixtures import MONITOR_APP, Node
from tests.support.netns import Host, Network
from tests.support.servers import UvicornProcess

BROKER_PORT = 9092
HTTP_PORT = 8080
_QUIET = logging.getLogger("tests.netfaults.kafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class NamespacedServer(UvicornProcess):
    """``meshkit run APP`` inside a host's namespace, listening on the host's address."""

    def __init__(self, network: Network, host: Host, app: str, properties: Mapping[str, str]) -> None:
        super().__init__(app, port=HTTP_PORT, properties=properties, startup_timeout=40.0, stop_timeout=5.0)
        self.network = network
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{self.port}"

    def command(self) -> list[str]:
        defines = [f"-D{key}={value}" for key, value in self.properties.items()]
        argv = [sys.executable, "-m", "meshkit.cli", "run", self.app, "--host", self.host.address]
        return self.network.command(self.host, [*argv, "--port", str(self.port), *defines])

    def start(self) -> NamespacedServer:
        super().start()
        if self._process is not None:  # the network kills it on close, should the test's teardown not
            self.network.track(self._process)
        return self


@dataclass
class NetNode:
    """A mesh process and the host it runs on."""

    node: Node
    host: Host

    @property
    def origin(self) -> str:
        return self.node.origin

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def presence_url(self) -> str:
        return f"ws://{self.host.address}:{HTTP_PORT}/ws/presence"

    def get_json(self, path: str, timeout: float = 10) -> Any:
        return self.node.get_json(path, timeout)

    def log(self) -> str:
        return self.node.log()

    def __repr__(self) -> str:
        return f"<{self.host.name} {self.origin[-8:]} at {self.host.address}>"


class NetMesh:
    """Tansu on host ``broker``; monitors and apps on hosts of their own; all stopped on close."""

    def __init__(self, network: Network, logs: Path) -> None:
        self.network = network
        self.logs = logs
        self.http = httpx.Client(trust_env=False, timeout=10)  # the observer link: never through a proxy
        self.nodes: list[NetNode] = []
        self.broker = network.host("broker")
        self._broker_log = logs / "tansu.log"
        url = f"tcp://{self.broker.address}:{BROKER_PORT}"
        tansu = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._tansu = network.popen(
            self.broker, [*tansu, "--storage-engine", "memory://tansu/"], log=self._broker_log
        )
        self._wait_for_broker()

    @property
    def bootstrap(self) -> str:
        return f"{self.broker.address}:{BROKER_PORT}"

    def broker_log(self) -> str:
        return self._broker_log.read_text(errors="replace")

    def _wait_for_broker(self, timeout: float = 30.0) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap}, logger=_QUIET)
        while True:
            if self._tansu.poll() is not None:
                raise RuntimeError(f"Tansu exited with {self._tansu.returncode}:\n{self.broker_log()}")
            try:
                admin.list_topics(timeout=1.0)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Tansu not ready in {timeout} s:\n{self.broker_log()}") from None
                time.sleep(0.1)

    def _start(self, name: str, app: str, properties: Mapping[str, str]) -> NetNode:
        host = self.network.host(name)
        process = NamespacedServer(self.network, host, app, properties).start()
        try:
            info = self.http.get(process.url + "/info").raise_for_status().json()
        except BaseException:
            process.stop(signal.SIGKILL)
            raise
        node = Node(process, info["origin"], int(info["runtime"]["pid"]), info["app"]["name"], self.http)
        started = NetNode(node, host)
        self.nodes.append(started)
        return started

    def presence_url(self, name: str) -> str:
        """Where apps reach monitor ``name`` (its host made now if new): an app may start before it."""
        host = self.network.host(name)
        return f"ws://{host.address}:{HTTP_PORT}/ws/presence"

    def monitor(self, name: str, properties: Mapping[str, str] | None = None) -> NetNode:
        return self._start(name, MONITOR_APP, {"bootstrap.servers": self.bootstrap, **(properties or {})})

    def app(
        self, name: str, app: str, monitors: Sequence[str], properties: Mapping[str, str] | None = None
    ) -> NetNode:
        """An app joined through the monitors named (tried in that order; they may still be starting)."""
        config = {
            "cloud.connector": "kafka",
            "bootstrap.servers": self.bootstrap,
            "mandatory.health.dependencies": "cloud.connector.health",
            "presence.url": ",".join(self.presence_url(m) for m in monitors),
            "drain.quiet": "0.3",  # stopping at the end of the test: nothing is in flight by then
            # the watchdog's loopback writes to the app's own partition beside its callers: Tansu then may
            # hide a request from the app at the log's end (bench/broker_visibility.py), a loss no real
            # Kafka has, which these tests would count as meshkit's
            "connector.watchdog.interval": "3600",
            **(properties or {}),
        }
        return self._start(name, app, config)

    def side_by_side(self, *starts: Callable[[], NetNode]) -> list[NetNode]:
        """Start several nodes at once (each waits seconds for its imports on a small machine)."""
        with ThreadPoolExecutor(len(starts)) as pool:
            futures = [pool.submit(start) for start in starts]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Apps first, then monitors, gracefully and side by side; the network kills what is left."""
        apps = [n for n in self.nodes if n.node.process.app != MONITOR_APP]
        monitors = [n for n in self.nodes if n.node.process.app == MONITOR_APP]
        for batch in (apps, monitors):
            if batch:
                with ThreadPoolExecutor(len(batch)) as pool:
                    list(pool.map(lambda n: n.node.process.stop(), batch))
        if self._tansu.poll() is None:
            self._tansu.kill()
            self._tansu.wait(timeout=5)
        self.http.close()

    def __enter__(self) -> NetMesh:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
