"""A direct link cut between real hosts: the caller and its callees on the direct path (framed TCP), the
link between the caller and a1 cut by nftables rules that drop its packets, so that it neither closes nor
answers (no FIN, no RST), while both still reach the broker; then healed.

Callers are 4 HTTP clients calling ``mesh.once`` (not safe to retry) through the caller app, with a 3 s
deadline each (tests/netfaults/_calls.py).
"""

from __future__ import annotations

import time

import pytest

from tests.netfaults._calls import Calls
from tests.netfaults._checks import build
from tests.netfaults._mesh import NetMesh
from tests.netfaults.test_link_cuts import CLIENTS, DEADLINE, common_checks, healed, hold, row
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import nodes_of, path_to
from tests.support.netns import Network

pytestmark = pytest.mark.kafka

KEEPALIVE = 1.0  # mesh.direct.keepalive: a ping a second, a link silent for 2 s is dead
DIRECT = {
    "mesh.transport": "direct",
    "mesh.direct.keepalive": str(KEEPALIVE),
    "mesh.direct.connect.timeout": "1",
}


def test_a_silent_direct_link_is_dropped_and_its_peer_used_over_the_broker(
    network: Network, netmesh: NetMesh
) -> None:
    """The caller finds its link to a1 dead within twice the keepalive (and a ping interval), fails at once
    what it had sent over it (503: not safe to retry), and then calls a1 over the broker while its dials
    time out. No call ends past its deadline, none runs twice, and after the heal the link is back."""
    mesh = build(netmesh, monitors=1, app_properties=DIRECT)
    caller = mesh.caller
    a1, a2 = mesh.callees
    wait_until(
        lambda: path_to(caller.node, a1.node) == path_to(caller.node, a2.node) == "direct",
        timeout=20,
        what="the caller linked to both callees",
        describe=lambda: str(nodes_of(caller.node)),
    )
    with Calls(caller.url, deadline=DEADLINE, clients=CLIENTS) as calls:
        calls.wait_for(20)
        network.cut(caller.host, a1.host)
        cut_at = time.monotonic()
        wait_until(lambda: path_to(caller.node, a1.node) == "broker", timeout=10, what="the link dropped")
        dropped_at = time.monotonic()
        dropped_after = dropped_at - cut_at

        def a1_over_the_broker() -> bool:  # sent once the link was down, and answered by a1
            since = calls.ended(dropped_at + 0.2, time.monotonic()).calls
            return any(c.served_by == a1.origin for c in since)

        wait_until(a1_over_the_broker, timeout=30, what="a call served by a1 over the broker, in the cut")
        hold(cut_at)
        assert path_to(caller.node, a1.node) == "broker"  # its dials get no answer while the cut lasts
        assert path_to(caller.node, a2.node) == "direct"  # the other link is untouched
        healed_at = time.monotonic()
        network.heal(caller.host, a1.host)
        wait_until(lambda: path_to(caller.node, a1.node) == "direct", timeout=40, what="the link redialed")
        relinked = time.monotonic() - healed_at
        recovery = healed(mesh, calls, healed_at)
    during = calls.summary(cut_at, healed_at)
    row("direct link caller-a1 cut (both ways), the broker reachable", during, recovery)
    print(f"link dropped {dropped_after:.1f} s after the cut; redialed {relinked:.1f} s after the heal")
    common_checks(mesh, calls)
    assert dropped_after < 2 * KEEPALIVE + KEEPALIVE + 1.0, dropped_after
    failed = calls.summary(cut_at).failed
    # those on the dead link when it was found dead, one per client at most, failed fast or at deadline
    assert {c.status for c in failed} <= {503, 408}, during.errors()
    assert len(failed) <= CLIENTS + 2, during.line()
    assert "Direct connection to" in caller.node.log() and "lost after" in caller.node.log()
