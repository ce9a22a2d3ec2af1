"""The seed's walk-through (the README's walk-through), end to end, with real processes.

A Kafka-compatible broker, the presence monitor, the REST example and the lambda example (both with
``cloud.connector=kafka`` and ``mandatory.health.dependencies=cloud.connector.health``), then Ctrl-C on the
lambda example. The broker is the test's own: the seed's numbers ("System contains 2 topics",
``multiplex.0001-000`` and ``-001``) hold on an empty cluster only.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import (
    LAMBDA_APP,
    REST_APP,
    Mesh,
    connections_of,
    health,
    monitor_info,
    pretty,
    routes_of,
)

pytestmark = pytest.mark.kafka

ISO_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CONNECTION_KEYS = {
    "elapsed",
    "created",
    "origin",
    "name",
    "topic",
    "monitor",
    "type",
    "updated",
    "version",
    "seq",
    "group",
}


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def test_the_seed_walk_through_from_start_to_ctrl_c(mesh: Mesh) -> None:
    # -- the presence monitor, then the REST example, then the lambda example --------------------------------
    monitor = mesh.monitor()
    monitor.wait_for_log("service.monitor, partition 0 ready")
    monitor.wait_for_log(f"Registered monitor (me) {monitor.origin}")
    rest = mesh.app(REST_APP)
    lambda_example = mesh.app(LAMBDA_APP)
    assert (rest.name, lambda_example.name) == ("rest-example", "lambda-example")
    r, lam = rest.origin, lambda_example.origin

    # each connected to the monitor, got its virtual topic and consumes that partition
    rest.wait_for_log(f"Connected {monitor.presence_url}/{r}, multiplex.0001-000")
    rest.wait_for_log("multiplex.0001, partition 0 ready")
    lambda_example.wait_for_log(f"Connected {monitor.presence_url}/{lam}, multiplex.0001-001")
    lambda_example.wait_for_log("multiplex.0001, partition 1 ready")

    # real-time service discovery: each app learnt the other's public routes
    wait_until(
        lambda: lam in routes_of(rest).get("hello.pojo", {}), timeout=5, what="hello.pojo at the REST example"
    )
    for line in (
        f"Peer {lam} joins (lambda-example 1.0.0)",
        f"hello.world (lambda-example, APP.{lam}) registered",
        f"hello.pojo (lambda-example, APP.{lam}) registered",
    ):
        rest.wait_for_log(line, timeout=5)
    for line in (f"Peer {r} joins (rest-example 1.0.0)", f"hello.world (rest-example, WEB.{r}) registered"):
        lambda_example.wait_for_log(line, timeout=5)

    # -- GET /api/pojo/mesh/1: the REST example calls hello.pojo in the lambda example through Kafka ---------
    response = rest.get("/api/pojo/mesh/1")
    assert response.status_code == 200, response.text
    pojo = response.json()
    assert set(pojo) == {"id", "name", "address", "date", "instance", "seq", "origin"}
    assert (pojo["id"], pojo["name"], pojo["address"]) == (
        1,
        "Simple PoJo class",
        "100 World Blvd, Planet Earth",
    )
    assert ISO_UTC_MS.match(pojo["date"]), pojo["date"]
    assert 1 <= pojo["instance"] <= 10
    assert isinstance(pojo["seq"], int) and pojo["seq"] >= 1
    assert pojo["origin"] == lambda_example.get_json("/info")["origin"] == lam
    second = rest.get("/api/pojo/mesh/2").json()
    assert (second["id"], second["origin"]) == (2, lam)
    assert second["seq"] > pojo["seq"]

    # -- GET /api/tokens/mesh: hello.tokens streams through Kafka, relayed as Server-Sent Events -------------
    response = rest.get("/api/tokens/mesh?text=the%20mesh%20streams%20words")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == "data: the\n\ndata: mesh\n\ndata: streams\n\ndata: words\n\n"

    # -- the monitor's /info ---------------------------------------------------------------------------------
    info = monitor.get_json("/info")
    assert info["app"] == {"name": "presence-monitor", "version": "1.0.0", "description": "Presence Monitor"}
    assert info["personality"] == "RESOURCES"
    assert info["origin"] == monitor.origin
    extra = info["additional_info"]
    assert extra["total"] == {"topics": 2, "virtual_topics": 2, "connections": 2}, pretty(extra)
    assert extra["topics"] == ["multiplex.0001 (32)", "service.monitor (11)"]
    assert extra["virtual_topics"] == [
        f"multiplex.0001-000 -> {r}, rest-example v1.0.0",
        f"multiplex.0001-001 -> {lam}, lambda-example v1.0.0",
    ]
    assert len(extra["monitors"]) == 1
    assert re.match(rf"^{monitor.origin} - \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", extra["monitors"][0])
    connections = {c["origin"]: c for c in extra["connections"]}
    assert set(connections) == {r, lam}
    expected = {
        r: {"name": "rest-example", "topic": "multiplex.0001-000", "type": "WEB"},
        lam: {"name": "lambda-example", "topic": "multiplex.0001-001", "type": "APP"},
    }
    for origin, connection in connections.items():
        assert set(connection) == CONNECTION_KEYS, pretty(connection)
        assert {k: connection[k] for k in ("name", "topic", "type")} == expected[origin]
        assert (connection["monitor"], connection["version"], connection["group"]) == (
            monitor.origin,
            "1.0.0",
            1,
        )
        assert ISO_UTC_MS.match(connection["created"]) and ISO_UTC_MS.match(connection["updated"])
        assert isinstance(connection["elapsed"], str) and connection["elapsed"]
        assert isinstance(connection["seq"], int)

    # -- /health everywhere: a real loopback through the broker ------------------------------------------
    for node, pattern in (
        (monitor, r"^Loopback test took \d+ ms; System contains 2 topics$"),
        (rest, r"^Loopback test took \d+ ms$"),
        (lambda_example, r"^Loopback test took \d+ ms$"),
    ):
        status, body = health(node)
        assert status == 200, pretty(body)
        assert (body["status"], body["origin"], body["name"]) == ("UP", node.origin, node.name)
        [upstream] = body["upstream"]
        assert upstream["route"] == "cloud.connector.health"
        assert (upstream["status_code"], upstream["required"]) == (200, True)
        assert (upstream["service"], upstream["topics"]) == ("kafka", "on-demand")
        assert upstream["href"] == mesh.broker.bootstrap
        assert re.match(pattern, upstream["message"]), upstream["message"]

    # -- the other actuators of the seed, on the REST example --------------------------------------------
    table = routes_of(rest)
    assert table["hello.pojo"] == {lam: "lambda-example, APP"}
    assert table["hello.world"] == {r: "rest-example, WEB", lam: "lambda-example, APP"}
    nodes = rest.get_json("/info/routes")["routing"]["nodes"]
    assert nodes[lam]["name"] == "lambda-example" and nodes[lam]["personality"] == "APP"
    assert rest.get("/livenessprobe").text == "OK"
    assert any(lib.lower().startswith("confluent") for lib in rest.get_json("/info/lib")["library"])
    env = rest.get_json("/env")
    assert env["routing"]["public"] == {"hello.world": 10}
    assert "cloud.connector.health" in env["routing"]["private"]
    assert env["properties"]["cloud.connector"] == "kafka"

    # the keep-alives reach the monitor: each connection's seq grows while the apps run
    first_seq = {o: c["seq"] for o, c in connections.items()}
    wait_until(
        lambda: all(c["seq"] > first_seq[o] for o, c in connections_of(monitor).items()),
        timeout=10,
        what="growing seq in the monitor's connections",
    )

    # -- Ctrl-C on the lambda example ------------------------------------------------------------------------
    sent = mesh.signal(lambda_example, signal.SIGINT)
    wait_until(
        lambda: "hello.pojo" not in routes_of(rest), timeout=3, what="hello.pojo gone from the REST example"
    )
    dropped_after = time.monotonic() - sent
    rest.wait_for_log(f"Peer {lam} left (lambda-example 1.0.0)", timeout=1)
    rest.wait_for_log(f"hello.pojo {lam} unregistered", timeout=1)
    rest.wait_for_log(f"hello.world {lam} unregistered", timeout=1)
    assert routes_of(rest)["hello.world"] == {r: "rest-example, WEB"}
    assert lam not in rest.get_json("/info/routes")["routing"]["nodes"]

    # the monitor released its topic and no longer lists it
    def released() -> dict[str, Any] | None:
        extra = monitor_info(monitor)
        return extra if lam not in {c["origin"] for c in extra["connections"]} else None

    extra = wait_until(released, timeout=3, what="the lambda example gone from /info")
    assert extra["total"]["connections"] == extra["total"]["virtual_topics"] == 1
    assert extra["virtual_topics"] == [f"multiplex.0001-000 -> {r}, rest-example v1.0.0"]
    monitor.wait_for_log(f"Member {lam} left", timeout=1)
    monitor.wait_for_log(f"multiplex.0001-001 released by {lam}, lambda-example, 1.0.0", timeout=1)

    # the mesh path now says the route is gone, at once
    response = rest.get("/api/pojo/mesh/1")
    assert response.status_code == 404
    assert response.json() == {"detail": "Route hello.pojo not found"}
    wait_until(lambda: not lambda_example.running, timeout=10, what="the lambda example's exit")
    assert lambda_example.process.stop() == 0  # it exited by itself, cleanly
    print(f"SIGINT -> hello.pojo gone at the REST example: {dropped_after * 1000:.0f} ms")
