"""A route that takes calls only from some apps: the allowed app gets through over the broker, the direct
path and Event over HTTP; any other app gets 403, and the guarded app logs a line naming it.

Real broker, real processes (docs/protocol/access.md). ``guarded.secret`` takes calls only from
``mesh-peer``; ``mesh-caller`` (tests/apps/mesh_echo.py) is the app it refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import CALLER_APP, Mesh, Node, routes_of

pytestmark = pytest.mark.kafka

GUARDED_APP = "tests.apps.guarded:app"
PEER_APP = "tests.apps.mesh_peer:app"
KEY = {"mesh.api.key": "mesh-key"}


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def call(app: Node, route: str, endpoint: str | None = None) -> dict[str, Any]:
    path = f"/call/{route}" + (f"?endpoint={endpoint}" if endpoint else "")
    answer: dict[str, Any] = app.get_json(path)
    answer.setdefault("error", answer.get("body"))  # an error reply or an AppError raised: its text
    return answer


def knows(app: Node, route: str, origin: str) -> bool:
    return origin in routes_of(app).get(route, {})


@pytest.mark.parametrize("transport", ["broker", "direct"])
def test_only_the_allowed_app_calls_a_guarded_route(mesh: Mesh, transport: str) -> None:
    mesh.monitor(KEY)
    settings = {**KEY, "mesh.transport": transport}
    guarded = mesh.app(GUARDED_APP, settings)
    allowed, other = mesh.app(PEER_APP, settings), mesh.app(CALLER_APP, settings)
    for caller in (allowed, other):
        wait_until(partial(knows, caller, "guarded.secret", guarded.origin), timeout=10, what="guarded")

    for _ in range(3):
        answer = call(allowed, "guarded.secret")
        assert answer["status"] == 200 and answer["body"] == "secret", answer
        refused = call(other, "guarded.secret")
        assert refused["status"] == 403, refused
        assert "takes calls only from mesh-peer" in refused["error"], refused
        assert refused["elapsed"] < 2.0  # refused at once, not timed out
    assert call(other, "guarded.open")["status"] == 200  # only the guarded route is guarded

    log = guarded.wait_for_log(f"Refused a call to guarded.secret from mesh-caller ({other.origin})")
    assert "it takes calls only from mesh-peer" in log
    node = allowed.get_json("/info/routes")["routing"]["nodes"][guarded.origin]
    assert node["path"] == transport, node
    # the routing table and the catalog say who may call
    assert node["allow"] == {"guarded.secret": ["mesh-peer"]}
    wait_until(
        lambda: "guarded.secret" in allowed.get_json("/info/routes?detail=true").get("catalog", {}),
        timeout=10,
        what="the catalog",
    )
    catalog = allowed.get_json("/info/routes?detail=true")["catalog"]
    assert catalog["guarded.secret"].get("allow") == ["mesh-peer"], catalog["guarded.secret"]
    assert "allow" not in catalog["guarded.open"]


def test_over_http_the_caller_proves_itself_with_a_signed_header(mesh: Mesh) -> None:
    mesh.monitor(KEY)
    guarded = mesh.app(GUARDED_APP, KEY)
    allowed, other = mesh.app(PEER_APP, KEY), mesh.app(CALLER_APP, KEY)
    for caller in (allowed, other):
        wait_until(partial(knows, caller, "guarded.secret", guarded.origin), timeout=10, what="guarded")
    endpoint = f"{guarded.url}/api/event"
    for _ in range(2):
        answer = call(allowed, "guarded.secret", endpoint)
        assert answer["status"] == 200 and answer["body"] == "secret", answer
        refused = call(other, "guarded.secret", endpoint)
        assert refused["status"] == 403 and "not from mesh-caller" in refused["error"], refused
    # the mesh key alone is not a caller: a POST without the header is not proven
    import httpx

    from meshkit.core import EventEnvelope, decode, encode

    posted = encode(EventEnvelope("guarded.secret", None))
    response = httpx.post(endpoint, content=posted, headers={"x-mesh-key": "mesh-key"}, timeout=10)
    assert response.status_code == 403 and "the caller is not proven" in decode(response.content).body
    forged = httpx.post(
        endpoint, content=posted, headers={"x-mesh-key": "mesh-key", "x-mesh-caller": "AAAA"}, timeout=10
    )
    assert forged.status_code == 403
    guarded.wait_for_log("its caller proof does not hold")
