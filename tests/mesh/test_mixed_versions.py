"""A mesh of today's meshkit and an older one, as in a rolling upgrade: real processes on a real broker, the
older ones run from this repository's history (tests.support.older).

The older meshkit is the last one before framed TCP: its direct path is the websocket on the HTTP port
(`ws://` in its join). docs/protocol/direct.md says it ignores today's `tcp://` addresses and is dialed at
its `ws://` one, so two apps of different builds still get their link; an app without a direct address is
reached over the broker. Either way, requests and replies cross in both directions.

An app from before the replay stamps cannot share the mesh (docs/protocol/README.md, "Compatibility and
rolling upgrades"): its unstamped messages are refused, by design, and the last test holds that.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import (
    LAMBDA_APP,
    REST_APP,
    Mesh,
    Node,
    connections_of,
    duplicated_topics,
    monitor_info,
    nodes_of,
    path_to,
    routes_of,
    statuses_while_moving,
)
from tests.support.older import BEFORE_FRAMED_TCP, BEFORE_REPLAY_STAMPS, older_tree

pytestmark = pytest.mark.kafka

DIRECT = {"mesh.transport": "direct"}


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return older_tree(BEFORE_FRAMED_TCP, tmp_path_factory.mktemp("before-framed-tcp"))


def served_by(rest: Node, calls: int = 20) -> Counter[str]:
    """Which lambda examples answered `calls` mesh calls of the REST example (each must succeed)."""
    origins: Counter[str] = Counter()
    for _ in range(calls):
        response = rest.get("/api/pojo/mesh/1")
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{quiet_log(rest)}"
        origins[response.json()["origin"]] += 1
    return origins


def quiet_log(app: Node) -> str:
    return "\n".join(line for line in app.log().splitlines() if "HTTP/1.1" not in line)[-4000:]


def sees(app: Node, route: str, origin: str) -> None:
    wait_until(
        lambda: origin in routes_of(app).get(route, {}),
        timeout=10,
        what=f"{route} of {origin} in the table of {app!r}",
        describe=lambda: quiet_log(app),
    )


def linked(a: Node, b: Node) -> None:
    wait_until(
        lambda: path_to(a, b) == "direct" and path_to(b, a) == "direct",
        timeout=15,
        what=f"a direct link between {a!r} and {b!r}",
        describe=lambda: f"{nodes_of(a)}\n{quiet_log(a)}\n-----\n{quiet_log(b)}",
    )


def test_an_older_app_and_todays_link_over_the_older_ones_websocket_and_call_each_other(
    mesh: Mesh, older: Path
) -> None:
    mesh.monitor()
    old_lambda = mesh.app(LAMBDA_APP, DIRECT, root=older)
    rest = mesh.app(REST_APP, DIRECT)
    sees(rest, "hello.pojo", old_lambda.origin)
    linked(rest, old_lambda)
    assert nodes_of(rest)[old_lambda.origin]["direct_address"].startswith("ws://")  # its websocket
    assert served_by(rest) == {old_lambda.origin: 20}

    # the other way: an older REST example calls today's lambda example
    old_rest = mesh.app(REST_APP, DIRECT, root=older)
    old_lambda.process.stop()
    lam = mesh.app(LAMBDA_APP, DIRECT)
    sees(old_rest, "hello.pojo", lam.origin)
    wait_until(lambda: old_lambda.origin not in routes_of(old_rest).get("hello.pojo", {}), timeout=10)
    linked(old_rest, lam)
    assert served_by(old_rest) == {lam.origin: 20}
    assert "Skipped" not in quiet_log(lam) and "Refused" not in quiet_log(lam)  # nothing of the older refused


def test_an_older_app_on_the_broker_only_serves_and_calls_todays(mesh: Mesh, older: Path) -> None:
    mesh.monitor()
    old_lambda = mesh.app(LAMBDA_APP, root=older)
    rest = mesh.app(REST_APP, DIRECT)
    sees(rest, "hello.pojo", old_lambda.origin)
    assert served_by(rest) == {old_lambda.origin: 20}
    assert path_to(rest, old_lambda) == "broker"  # it says no direct address: never dialed
    old_rest = mesh.app(REST_APP, root=older)
    old_lambda.process.stop()
    lam = mesh.app(LAMBDA_APP, DIRECT)
    sees(old_rest, "hello.pojo", lam.origin)
    wait_until(lambda: old_lambda.origin not in routes_of(old_rest).get("hello.pojo", {}), timeout=10)
    assert served_by(old_rest) == {lam.origin: 20}
    assert path_to(lam, old_rest) == "broker"


def test_todays_apps_join_and_link_through_an_older_monitor(mesh: Mesh, older: Path) -> None:
    mesh.monitor(root=older)
    lam = mesh.app(LAMBDA_APP, DIRECT)
    rest = mesh.app(REST_APP, DIRECT)
    sees(rest, "hello.pojo", lam.origin)
    linked(rest, lam)
    assert nodes_of(rest)[lam.origin]["direct_address"].startswith("tcp://")  # today's carrier between them
    assert served_by(rest) == {lam.origin: 20}
    lam.process.stop()
    wait_until(lambda: lam.origin not in routes_of(rest).get("hello.pojo", {}), timeout=10, what="its leave")


def test_the_monitors_upgraded_one_by_one_hand_todays_apps_over_without_a_failed_call(
    mesh: Mesh, older: Path
) -> None:
    """Monitor A of the older build and B of today's share the monitors' log; A stops (SIGTERM, as a
    rolling update does) and the apps move to B, every mesh call answered meanwhile."""
    a = mesh.monitor(root=older)
    b = mesh.monitor()
    lam = mesh.app(LAMBDA_APP, DIRECT)  # presence.url = ws://A,ws://B: connected through A
    rest = mesh.app(REST_APP, DIRECT)
    apps = {lam.origin, rest.origin}
    sees(rest, "hello.pojo", lam.origin)
    wait_until(
        lambda: set(connections_of(a)) == set(connections_of(b)) == apps, timeout=10, what="both at both"
    )
    assert {c["monitor"] for c in connections_of(b).values()} == {a.origin}  # B learned them from the log

    mesh.signal(a, signal.SIGTERM)
    statuses = statuses_while_moving(rest, b, apps, timeout=15, describe=lambda: quiet_log(b))
    assert statuses.keys() == {200}, f"mesh calls during the hand-over: {dict(statuses)}\n{quiet_log(rest)}"
    assert duplicated_topics(monitor_info(b)) == []
    assert f"Peer {lam.origin} left" not in rest.log()


def test_an_app_from_before_the_replay_stamps_is_refused_and_never_routed_to(
    mesh: Mesh, tmp_path_factory: pytest.TempPathFactory
) -> None:
    unstamped = older_tree(BEFORE_REPLAY_STAMPS, tmp_path_factory.mktemp("before-replay-stamps"))
    mesh.monitor()
    rest = mesh.app(REST_APP)
    old_lambda = mesh.app(LAMBDA_APP, root=unstamped)
    rest.process.wait_for_log(
        f"control message for {old_lambda.origin} as a replay: it has no ts and seq stamp"  # its join
    )
    assert old_lambda.origin not in routes_of(rest).get("hello.pojo", {})
    response = rest.get("/api/pojo/mesh/1")
    assert response.status_code == 404 and "hello.pojo" in response.text, response.text
