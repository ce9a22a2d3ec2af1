"""A service mesh of real processes for tests/mesh/test_mesh_e2e.py and tests/mesh/test_mesh_faults.py.

    with Mesh(broker) as mesh:
        monitor = mesh.monitor()
        rest = mesh.app(REST_APP)
        lambda_example = mesh.app(LAMBDA_APP)
        wait_until(lambda: lambda_example.origin in routes_of(rest).get("hello.pojo", {}), timeout=5)

(``wait_until`` is tests.support.eventually's.) Every process is a
:class:`~tests.support.servers.UvicornProcess` on a free port of 127.0.0.1, configured with ``-Dkey=value``;
apps join the mesh with ``cloud.connector=kafka`` and ``mandatory.health.dependencies=cloud.connector.health``
as in the seed, and find the monitors through ``presence.url``. ``Mesh(broker, ssl_context=...)`` is for nodes
serving TLS (``server.ssl.certfile``): the test's own HTTP client and the readiness checks use that context
(with a client certificate for mutual TLS), and such a monitor's ``presence_url`` is ``wss://``. Leaving
the ``with`` block stops every process still running (a stopped one is continued first), then the test's
broker goes away with its fixture.
"""

from __future__ import annotations

import json
import logging
import os
import signal as signals
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.servers import REPO, UvicornProcess, free_port

MONITOR_APP = "presence_server.main:app"
REST_APP = "example_services.rest_example.main:app"
LAMBDA_APP = "example_services.lambda_example.main:app"
CALLER_APP = "tests.apps.mesh_echo:caller"
CALLEE_APP = "tests.apps.mesh_echo:callee"


@dataclass
class Node:
    """A started process of the mesh: the monitor or an app, with the identity it reported at start."""

    process: UvicornProcess
    origin: str
    pid: int
    name: str
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def presence_url(self) -> str:
        """Where apps reach this node as a presence monitor (``wss://`` when it serves TLS)."""
        return f"{'wss' if self.process.tls else 'ws'}://127.0.0.1:{self.port}/ws/presence"

    @property
    def running(self) -> bool:
        return self.process.running

    def log(self) -> str:
        return self.process.log_text()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        return self.process.wait_for_log(text, timeout)

    def get(self, path: str, timeout: float = 15) -> httpx.Response:
        """GET, once more on a fresh connection when a kept-alive one was reset: uvicorn drops the connection
        after a 500 from an exception in the app, and the next request on it would fail."""
        try:
            return self.http.get(self.url + path, timeout=timeout)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            return self.http.get(self.url + path, timeout=timeout)

    def get_json(self, path: str, timeout: float = 15) -> Any:
        response = self.get(path, timeout)
        response.raise_for_status()
        return response.json()

    def __repr__(self) -> str:
        return f"<{self.name} {self.origin} on {self.port}>"


def routes_of(app: Node) -> dict[str, dict[str, str]]:
    """The app's distributed routing table from ``/info/routes``: route -> {origin: "name, PERSONALITY"}."""
    routes: dict[str, dict[str, str]] = app.get_json("/info/routes")["routing"]["routes"]
    return routes


def nodes_of(app: Node) -> dict[str, dict[str, Any]]:
    """The app instances an app knows, from ``/info/routes``: origin -> name, topic, path, ..."""
    nodes: dict[str, dict[str, Any]] = app.get_json("/info/routes")["routing"]["nodes"]
    return nodes


def path_to(app: Node, peer: Node) -> str | None:
    """How ``app`` reaches ``peer``: "direct" or "broker" (None: it does not know the peer)."""
    info = nodes_of(app).get(peer.origin)
    return None if info is None else str(info.get("path"))


def monitor_info(monitor: Node) -> dict[str, Any]:
    """The presence monitor's ``additional_info`` from ``/info`` (totals, topics, connections, ...)."""
    info: dict[str, Any] = monitor.get_json("/info")["additional_info"]
    return info


def connections_of(monitor: Node) -> dict[str, dict[str, Any]]:
    """origin -> connection as the monitor's ``/info`` lists it."""
    return {c["origin"]: c for c in monitor_info(monitor)["connections"]}


def serves(app: Node, route: str, origins: Sequence[str]) -> bool:
    """True when ``app``'s routing table has ``route`` served by exactly ``origins`` (order aside)."""
    return set(routes_of(app).get(route, {})) == set(origins)


def health(node: Node) -> tuple[int, dict[str, Any]]:
    response = node.get("/health")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def statuses_while_moving(
    rest: Node,
    monitor: Node,
    apps: set[str],
    *,
    timeout: float = 10.0,
    describe: Callable[[], str] | None = None,
) -> Counter[int]:
    """The statuses of the REST example's mesh calls, made back to back while every app of `apps` moves to
    `monitor` (its connections there name it) and 20 more after: a hand-over without a failed call is 200s."""
    statuses: Counter[int] = Counter()

    def moved() -> bool:
        statuses[rest.get("/api/pojo/mesh/1").status_code] += 1
        connections = connections_of(monitor)
        return set(connections) == apps and all(c["monitor"] == monitor.origin for c in connections.values())

    wait_until(
        moved, timeout=timeout, interval=0.02, what=f"{len(apps)} apps via {monitor!r}", describe=describe
    )
    for _ in range(20):
        statuses[rest.get("/api/pojo/mesh/1").status_code] += 1
    return statuses


def duplicated_topics(info: Mapping[str, Any]) -> list[str]:
    """Virtual topics (or origins) that appear more than once in a monitor's ``additional_info``."""
    entries = [line.split(" -> ", 1) for line in info["virtual_topics"]]
    topics = [entry[0] for entry in entries]
    holders = [entry[1].split(",", 1)[0] for entry in entries if len(entry) == 2]
    by_connection = [c["topic"] for c in info["connections"]]
    found = {t for t in topics if topics.count(t) > 1}
    found |= {o for o in holders if holders.count(o) > 1}
    found |= {t for t in by_connection if by_connection.count(t) > 1}
    return sorted(found)


def publish_raw(broker: DevBroker, topic: str, partition: int, records: Sequence[bytes]) -> None:
    """Put ``records`` as they are onto one partition, bypassing meshkit (a confluent-kafka Producer)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap, "logger": _QUIET})
    try:
        for record in records:
            producer.produce(topic, value=record, partition=partition)
        remaining = producer.flush(10)
        assert remaining == 0, f"{remaining} records not delivered to {topic}[{partition}]"
    finally:
        producer.close()


def read_raw(broker: DevBroker, topic: str, partition: int, timeout: float = 10) -> list[bytes]:
    """Every record on one partition so far, from its first, as they are (what an eavesdropper captures)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "tests-capture", "logger": _QUIET}
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        records: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(records) < high and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            value = message.value() if message is not None and message.error() is None else None
            if value is not None:
                records.append(value)
        return records
    finally:
        consumer.close()


_QUIET = logging.getLogger("tests.support.mesh_fixtures.kafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class Mesh:
    """Monitors and apps on one broker; all stopped when the ``with`` block (or :meth:`close`) ends."""

    def __init__(self, broker: DevBroker, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.broker = broker
        self.ssl_context = ssl_context
        self.nodes: list[Node] = []
        self.monitors: list[Node] = []
        self._stopped: set[int] = set()  # pids held by SIGSTOP
        # 127.0.0.1: never through a proxy
        self.http = httpx.Client(trust_env=False, timeout=15, verify=ssl_context or True)

    # -- starting -------------------------------------------------------------------------------------------
    def _start(
        self, app: str, properties: Mapping[str, str], port: int | None = None, root: Path = REPO
    ) -> Node:
        process = UvicornProcess(
            app, port=port or free_port(), properties=properties, ssl_context=self.ssl_context, root=root
        )
        process.start()
        try:
            response = self.http.get(process.url + "/info")
            response.raise_for_status()
            info = response.json()
        except BaseException:
            process.stop(signals.SIGKILL)
            raise
        node = Node(process, info["origin"], int(info["runtime"]["pid"]), info["app"]["name"], self.http)
        self.nodes.append(node)
        return node

    def monitor(
        self, properties: Mapping[str, str] | None = None, *, port: int | None = None, root: Path = REPO
    ) -> Node:
        """A presence monitor (``presence_server.main:app``) on this mesh's broker; `root`: the tree it runs
        from (an older meshkit's, tests.support.older)."""
        node = self._start(
            MONITOR_APP, {"bootstrap.servers": self.broker.bootstrap, **(properties or {})}, port, root
        )
        self.monitors.append(node)
        return node

    def monitors_at_once(self, count: int, properties: Mapping[str, str] | None = None) -> list[Node]:
        """``count`` monitors started side by side, listed in ``presence.url`` order.

        Each monitor waits about two heartbeats for a peer's state at start; side by side, they wait once.
        Only for a mesh without apps yet (they all start with an empty state).
        """
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(self.monitor, properties) for _ in range(count)]
        nodes = [future.result() for future in futures]
        self.monitors[-count:] = nodes
        return nodes

    def app(
        self,
        app: str,
        properties: Mapping[str, str] | None = None,
        *,
        monitors: Sequence[Node] | None = None,
        port: int | None = None,
        root: Path = REPO,
    ) -> Node:
        """An app with ``cloud.connector=kafka`` connected to ``monitors`` (default: all of them, in order).

        ``properties`` add to (or override) that configuration, e.g. ``{"presence.keepalive": "1"}``;
        ``root`` is the tree it runs from (an older meshkit's, tests.support.older).
        """
        chosen = self.monitors if monitors is None else monitors
        config = {
            "cloud.connector": "kafka",
            "bootstrap.servers": self.broker.bootstrap,
            "mandatory.health.dependencies": "cloud.connector.health",
            "presence.url": ",".join(m.presence_url for m in chosen),
            "drain.quiet": "0.3",  # a local broker delivers in milliseconds: stopping takes less
            **(properties or {}),
        }
        return self._start(app, config, port, root)

    # -- faults ---------------------------------------------------------------------------------------------
    def signal(self, node: Node, sig: signals.Signals) -> float:
        """Send ``sig`` to the node's process without waiting; returns the monotonic time it was sent."""
        if not node.running:
            raise AssertionError(f"{node!r} is not running")
        os.kill(node.pid, sig)
        if sig == signals.SIGSTOP:
            self._stopped.add(node.pid)
        elif sig == signals.SIGCONT:
            self._stopped.discard(node.pid)
        return time.monotonic()

    def kill(self, node: Node) -> float:
        """SIGKILL, and reap the process; returns the monotonic time the signal was sent."""
        sent = time.monotonic()
        node.process.stop(signals.SIGKILL)
        return sent

    # -- teardown -------------------------------------------------------------------------------------------
    def close(self) -> None:
        for node in reversed(self.nodes):
            if node.pid in self._stopped and node.running:
                os.kill(node.pid, signals.SIGCONT)
            self._stopped.discard(node.pid)
        # apps first, then the monitors; side by side, each batch (a graceful stop takes a while)
        apps = [n for n in self.nodes if n not in self.monitors]
        for batch in (apps, self.monitors):
            if batch:
                with ThreadPoolExecutor(len(batch)) as pool:
                    list(pool.map(lambda node: node.process.stop(), batch))
        self.http.close()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def pretty(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
