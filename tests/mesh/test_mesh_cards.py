"""Cards on a real broker with real processes (docs/protocol/presence.md#cards): an app with cards and one
without, as in a mesh upgraded app by app, see each other and call each other; a route change reaches a
newcomer through the card; garbage where a card should be is refused and the session goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.identities import PUBLIC_KEY
from tests.support.mesh_fixtures import Mesh, Node, serves

pytestmark = pytest.mark.kafka

PEER_APP = "tests.apps.mesh_peer:app"
WITHOUT_CARDS = {"presence.cards": "false"}


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def call(app: Node, route: str) -> str:
    answer = app.get_json(f"/call/{route}")
    assert answer["status"] == 200, answer
    return str(answer["body"]["origin"])


def test_an_app_with_cards_and_one_without_see_and_call_each_other(mesh: Mesh) -> None:
    mesh.monitor()
    carded = mesh.app(PEER_APP)
    legacy = mesh.app(PEER_APP, WITHOUT_CARDS)
    newcomer = mesh.app(PEER_APP)  # joins a group that has an app without cards: it writes a join too
    every = [carded.origin, legacy.origin, newcomer.origin]
    for app in (carded, legacy, newcomer):
        wait_until(lambda app=app: serves(app, "peer.echo", every), timeout=15, what=f"all at {app!r}")
    for caller, callee in [(carded, legacy), (legacy, carded), (newcomer, legacy), (legacy, newcomer)]:
        assert call(caller, f"peer.echo@{callee.origin}") == callee.origin
    assert "Refused" not in carded.log() + legacy.log() + newcomer.log()


def test_garbage_cards_are_refused_and_the_session_goes_on(mesh: Mesh) -> None:
    monitor = mesh.monitor()
    watcher = mesh.app(PEER_APP)
    origin = "20261203" + "ab" * 16
    hello = {"type": "hello", "name": "t", "version": "1", "personality": "APP", "group": 1}
    hello |= {"created": "2026-12-03T00:00:00.000Z", "key": PUBLIC_KEY, "cards": True}
    url = monitor.url.replace("http://", "ws://") + f"/ws/presence/{origin}"
    with connect(url, open_timeout=5) as ws:
        ws.send(json.dumps(hello))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready" and ready["cards"] is True, ready
        for bad in (
            "not json",
            {"type": "card"},
            {"type": "card", "card": "garbage", "contracts": None},
            {"type": "card", "card": {"type": "card", "origin": origin, "sig": "x"}, "contracts": None},
        ):
            ws.send(bad if isinstance(bad, str) else json.dumps(bad))
        ws.send(json.dumps({"type": "alive", "seq": 1}))
        monitor.wait_for_log(f"Ignored a card from {origin}: not signed by the key of the hello")
        assert monitor.log().count(f"Ignored a card from {origin}") == 3
        assert ws.protocol.state.name == "OPEN"
    wait_until(lambda: serves(watcher, "peer.echo", [watcher.origin]), timeout=10, what="no routes for it")
