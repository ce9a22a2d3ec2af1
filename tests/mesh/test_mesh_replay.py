"""A genuinely signed control message captured on the broker and written again later is refused.

Real broker, real processes: the test reads the records the apps and the monitor really wrote (what anyone
who can read the topic captures), writes them again as they are, and checks that nobody believes them and
that the mesh goes on as before (docs/protocol/signing.md#replay).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshkit.devbroker import DevBroker
from meshkit.mesh._frames import parse
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import Mesh, Node, publish_raw, read_raw, routes_of, serves

pytestmark = pytest.mark.kafka

PEER_APP = "tests.apps.mesh_peer:app"
SECRETS = {"mesh.api.key": "mesh-key", "mesh.monitor.secret": "monitors-only"}


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def captured(mesh: Mesh, partition: int, **fields: Any) -> list[bytes]:
    """The records on service.monitor `partition` whose control message has all of `fields`."""
    found = []
    for record in read_raw(mesh.broker, "service.monitor", partition):
        message = parse(record).get("payload")
        if isinstance(message, dict) and all(message.get(k) == v for k, v in fields.items()):
            found.append(record)
    return found


def change_extra(app: Node, method: str) -> None:
    assert httpx.request(method, f"{app.url}/routes/peer.extra", timeout=10).status_code == 200


@pytest.mark.parametrize("cards", [True, False], ids=["cards", "joins"])
def test_captured_joins_route_changes_and_log_records_written_again_are_refused(
    mesh: Mesh, cards: bool
) -> None:
    """With cards (the default) the target's state rides in its card on the monitors' log; without, in its
    join on the group partition. Either, written again, is refused, and so is the route change."""
    monitor = mesh.monitor(SECRETS)
    settings = {**SECRETS, "presence.cards": str(cards).lower()}
    caller, target = mesh.app(PEER_APP, settings), mesh.app(PEER_APP, settings)
    both = [caller.origin, target.origin]
    wait_until(lambda: serves(caller, "peer.echo", both), timeout=10, what="target at caller")
    change_extra(target, "PUT")
    wait_until(lambda: serves(caller, "peer.extra", [target.origin]), timeout=10, what="the extra route")
    change_extra(target, "DELETE")
    wait_until(lambda: not serves(caller, "peer.extra", [target.origin]), timeout=10, what="it gone")
    change_extra(target, "PUT")
    wait_until(lambda: serves(caller, "peer.extra", [target.origin]), timeout=10, what="it back")

    # what the target really wrote: the change that took peer.extra away, and its join or its first card
    removal = captured(mesh, 1, type="routes", origin=target.origin, remove=["peer.extra"])
    join = captured(mesh, 1, type="join", origin=target.origin)
    claims = captured(mesh, 0, type="claim", origin=target.origin)
    first_card = captured(mesh, 0, type="card", origin=target.origin)[:1]
    assert len(removal) == 1 and claims, "the records to replay were not captured"
    assert (len(join), len(first_card)) == ((0, 1) if cards else (1, 0)), "joins and cards mixed"

    publish_raw(mesh.broker, "service.monitor", 1, removal + join)
    publish_raw(mesh.broker, "service.monitor", 0, claims + first_card)

    if not cards:
        caller.wait_for_log(f"Refused a join control message for {target.origin} as a replay: its seq")
    caller.wait_for_log(f"Refused a routes control message for {target.origin} as a replay: its seq")
    monitor.wait_for_log("a 'claim' message refused as a replay: its seq")
    if cards:
        monitor.wait_for_log("a 'card' message refused as a replay: its seq")
    # the replayed removal did nothing: the route is still there and answers
    assert serves(caller, "peer.extra", [target.origin])
    assert "peer.extra" in routes_of(caller)
    answer = caller.get_json("/call/peer.extra")
    assert answer["status"] == 200 and answer["body"] == "extra", answer
    # a newcomer never saw them, and still does not believe them: the target's card, or its answer to the
    # newcomer's join, is newer
    newcomer = mesh.app(PEER_APP, settings)
    wait_until(lambda: serves(newcomer, "peer.extra", [target.origin]), timeout=10, what="at the newcomer")
    publish_raw(mesh.broker, "service.monitor", 1, removal)
    newcomer.wait_for_log(f"Refused a routes control message for {target.origin} as a replay: its seq")
    assert serves(newcomer, "peer.extra", [target.origin])
