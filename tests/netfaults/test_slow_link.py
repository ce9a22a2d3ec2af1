"""A slow link, not a cut: callee a1's link limited by a token bucket (tc tbf, both ways; this kernel has no
netem), then restored. Calls keep their deadlines, none runs twice, and a1 stays in the mesh: its presence
websocket and its broker connections still pass, only slowly. After the limit goes the mesh is whole."""

from __future__ import annotations

import time

import pytest

from tests.netfaults._calls import Calls
from tests.netfaults._checks import build, monitor_view
from tests.netfaults._mesh import NetMesh
from tests.netfaults.test_link_cuts import CLIENTS, DEADLINE, common_checks, healed, hold, row
from tests.support.mesh_fixtures import routes_of
from tests.support.netns import Network

pytestmark = pytest.mark.kafka

RATE = "24kbit"  # a1's broker fetches and presence keep-alives still fit; each request waits its turn


def test_a_callee_on_a_slow_link_keeps_deadlines_and_stays_in_the_mesh(
    network: Network, netmesh: NetMesh
) -> None:
    mesh = build(netmesh, monitors=1)
    a1, a2 = mesh.callees
    with Calls(mesh.caller.url, deadline=DEADLINE, clients=CLIENTS) as calls:
        calls.wait_for(20)
        network.slow(a1.host, RATE)
        slowed_at = time.monotonic()
        calls.wait_for(40)
        hold(slowed_at)
        # slow, not gone: its monitor and the caller still hold it
        assert a1.origin in monitor_view(mesh.monitors[0]).topics
        assert a1.origin in routes_of(mesh.caller.node)["mesh.once"]
        restored_at = time.monotonic()
        network.unslow(a1.host)
        recovery = healed(mesh, calls, restored_at)
    during = calls.summary(slowed_at, restored_at)
    row(f"app a1's link limited to {RATE} both ways", during, recovery)
    by_a1 = sorted(c.elapsed for c in during.calls if c.served_by == a1.origin)
    median = by_a1[len(by_a1) // 2] if by_a1 else 0.0
    print(f"a1 served {len(by_a1)} of {len(during.calls)} calls meanwhile, {median:.2f} s median")
    common_checks(mesh, calls)
    assert {c.status for c in during.failed} <= {408}, during.errors()
    assert during.ok > 0 and any(c.served_by == a2.origin for c in during.calls), during.line()
    # the limit bites: a1's answers take tenths of a second, where they took hundredths (0.6 s median here)
    assert median > 0.1, by_a1
