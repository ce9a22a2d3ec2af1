"""Links cut between real hosts: an app from the broker, an app from its monitor, the broker from the caller
one way only; then healed.

Every host is a network namespace of its own (tests/support/netns.py); a link is cut by nftables rules
dropping its packets, so a connection on it neither closes nor answers, as when a cable or a switch fails.
Callers are 4 HTTP clients calling ``mesh.once`` (not safe to retry) through the caller app, with a 3 s
deadline each. In every case: no call ends past its deadline, no request runs twice, every reply is the
one asked for, and after the heal the mesh is whole again (every app known to every monitor and app, the
caller routing to both callees) and calls succeed on both callees.
"""

from __future__ import annotations

import datetime
import time

import pytest

from tests.netfaults._calls import Calls, Summary
from tests.netfaults._checks import Mesh, build, monitor_view, ran, ran_twice, replies_the_broker_hid
from tests.netfaults._mesh import NetMesh, NetNode
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import nodes_of, routes_of
from tests.support.netns import Network

pytestmark = pytest.mark.kafka

DEADLINE = 3.0
CLIENTS = 4
CUT = 6.0  # seconds a cut lasts at least
HEAL_WITHIN = 40.0  # seconds the mesh gets to become whole after the heal
KEEPALIVE = 2.0  # presence.keepalive, the default: a ping every 2 s, given up after 2 x 2 s without a pong


def common_checks(mesh: Mesh, calls: Calls) -> None:
    everything = calls.summary()
    assert everything.late() == [], f"calls past their deadline: {everything.late()[:3]}"
    wrong = [c for c in everything.calls if c.status == 200 and not c.echoed]
    assert wrong == [], f"replies to another request: {wrong[:3]}"
    assert ran_twice(mesh.callees) == [], "a request not safe to retry ran twice"


def healed(mesh: Mesh, calls: Calls, healed_at: float) -> float:
    """Seconds from the heal until the mesh is whole and each callee has served a call sent after it."""
    took, problems = mesh.wait_whole(healed_at, HEAL_WITHIN)
    assert took is not None, f"not whole {HEAL_WITHIN:g} s after the heal: {problems}"
    for callee in mesh.callees:
        calls.wait_for(5, served_by=callee.origin, timeout=HEAL_WITHIN)
    whole_at = time.monotonic()
    calls.wait_for(40)
    after = calls.summary(whole_at + 0.1)
    assert after.failed == [], f"calls failed once the mesh was whole again: {after.line()}"
    answered = calls.summary(healed_at).calls
    served = [min(c.sent + c.took for c in answered if c.served_by == x.origin) for x in mesh.callees]
    return max(took, *(at - healed_at for at in served))


def hold(cut_at: float) -> None:
    """Keep a cut for at least CUT seconds: long enough for ejections to back off, and for probes."""
    time.sleep(max(0.0, cut_at + CUT - time.monotonic()))


def row(cut: str, during: Summary, recovery: float) -> None:
    print(f"\nMATRIX | {cut} | {during.line()} | {recovery:.1f} s")


def test_an_app_cut_from_the_broker_but_not_its_monitor(network: Network, netmesh: NetMesh) -> None:
    """Callee a1 cannot reach the broker; its websocket to m1 is fine, so it stays in the mesh. Callers
    see the requests that were on their way to a1 time out at their deadline (408), then at most one probe
    per ejection; the rest are served by a2. After the heal a1 serves again."""
    mesh = build(netmesh, monitors=1)
    a1, a2 = mesh.callees
    with Calls(mesh.caller.url, deadline=DEADLINE, clients=CLIENTS) as calls:
        calls.wait_for(20)
        network.cut(a1.host, netmesh.broker)
        cut_at = time.monotonic()  # once the rule is in place: what was sent before may still pass
        wait_until(
            lambda: nodes_of(mesh.caller.node)[a1.origin]["ejected"], timeout=10, what="the caller ejects a1"
        )
        calls.wait_for(60, served_by=a2.origin)
        hold(cut_at)
        # cut off from the broker, yet present: m1 and the caller still hold it
        assert a1.origin in monitor_view(mesh.monitors[0]).topics
        assert a1.origin in routes_of(mesh.caller.node)["mesh.once"]
        healed_at = time.monotonic()
        network.heal(a1.host, netmesh.broker)
        back = calls.wait_for(1, served_by=a1.origin, timeout=HEAL_WITHIN)
        recovery = healed(mesh, calls, healed_at)
    during = calls.summary(cut_at, healed_at)
    row("app a1 cut from the broker (both ways), not from m1", during, recovery)
    print(f"a1 answered again {back - healed_at:.1f} s after the heal; whole after {recovery:.1f} s")
    common_checks(mesh, calls)
    failed = calls.summary(cut_at).failed
    assert {c.status for c in failed} <= {408}, during.errors()
    # those on their way to a1 at the cut, then a probe per ejection (1, 2, 4, 8 s apart)
    assert len(failed) <= CLIENTS + 6, during.line()
    in_cut = calls.ended(cut_at + 1, healed_at).calls
    assert {c.served_by for c in in_cut if c.status == 200} == {a2.origin}, during.line()


class GaveUpLate(AssertionError):
    """The app held on to a monitor that answers no ping longer than docs/protocol/presence.md says."""


def test_an_app_cut_from_its_monitor_but_not_the_broker(network: Network, netmesh: NetMesh) -> None:
    """Callee a1 cannot reach m1; the broker and m2 it can. m1 hears no keep-alive for presence.timeout
    (8 s) and writes a1's leave: the caller drops a1, and fails at once (503) what it had sent to a1 that
    was not answered yet. No call times out. a1 comes back (through m1 after the heal, or m2) and serves.
    And a1 gives up on m1 within a ping interval and its timeout (3 x presence.keepalive), as
    docs/protocol/presence.md says."""
    mesh = build(netmesh)
    m1 = mesh.monitors[0]
    a1, a2 = mesh.callees
    with Calls(mesh.caller.url, deadline=DEADLINE, clients=CLIENTS) as calls:
        calls.wait_for(20)
        network.cut(a1.host, m1.host)
        cut_at, cut_clock = time.monotonic(), time.time()
        # a1 may be back through m2 a moment after m1's leave (m2 admits it once m1 released it)
        wait_until(
            lambda: monitor_view(m1).monitors.get(a1.origin) != m1.origin, timeout=20, what="m1 drops a1"
        )
        dropped = time.monotonic() - cut_at
        wait_until(
            lambda: a1.origin not in routes_of(mesh.caller.node).get("mesh.once", {}),
            timeout=5,
            what="the caller drops a1",
        )
        calls.wait_for(40, served_by=a2.origin)
        healed_at = time.monotonic()
        network.heal(a1.host, m1.host)
        recovery = healed(mesh, calls, healed_at)
    during = calls.summary(cut_at, healed_at)
    row("app a1 cut from its monitor m1 (both ways), not from the broker", during, recovery)
    gave_up = gave_up_after(a1, m1, cut_clock)
    print(f"m1 dropped a1 {dropped:.1f} s after the cut; a1 gave up on m1 after {gave_up} s")
    common_checks(mesh, calls)
    failed = calls.summary(cut_at).failed
    lost_replies = replies_the_broker_hid(failed, mesh.callees)  # allowed: they ran, the broker hid them
    failed_here = [c for c in failed if c not in lost_replies]
    assert all(c.status == 503 and "left before replying" in c.error for c in failed_here), during.errors()
    assert all(c.elapsed < 1.0 for c in failed_here), [c.elapsed for c in failed_here]  # at the leave
    assert len(failed) <= CLIENTS, during.line()  # only those in flight to a1 when it was dropped
    if gave_up is None or gave_up > 3 * KEEPALIVE + 1.0:
        promised = f"a ping every {KEEPALIVE:g} s, given up {2 * KEEPALIVE:g} s after"
        raise GaveUpLate(f"a1 gave up on m1 {gave_up} s after the cut ({promised})")


def gave_up_after(app: NetNode, monitor: NetNode, since: float) -> float | None:
    """Seconds from ``since`` (wall clock) to the app's log saying ``monitor`` is unavailable, if it did."""
    for line in app.log().splitlines():
        if f"Presence monitor {monitor.presence_url} unavailable" in line:
            at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if at >= since:
                return round(at - since, 1)
    return None


def test_a_one_way_cut_from_the_broker_to_the_caller(network: Network, netmesh: NetMesh) -> None:
    """The broker's packets to the caller are lost, the caller's to the broker arrive: requests reach the
    callees and run, their replies never reach the caller. Every call in the cut ends at its deadline
    (408), none runs twice; after the heal every call succeeds again."""
    mesh = build(netmesh, monitors=1)
    with Calls(mesh.caller.url, deadline=DEADLINE, clients=CLIENTS) as calls:
        calls.wait_for(20)
        network.cut(netmesh.broker, mesh.caller.host, one_way=True)
        cut_at = time.monotonic()
        wait_until(
            lambda: calls.summary(cut_at).timeouts >= 2 * CLIENTS, timeout=20, what="two rounds of timeouts"
        )
        healed_at = time.monotonic()
        network.heal(netmesh.broker, mesh.caller.host)
        recovery = healed(mesh, calls, healed_at)
    during = calls.ended(cut_at, healed_at)
    row("one way: the broker's packets to the caller lost", during, recovery)
    common_checks(mesh, calls)
    assert during.ok == 0 and {c.status for c in during.calls} == {408}, during.line()
    # one way is real: what the caller sent arrived and ran
    assert {c.mark for c in during.calls} & ran(mesh.callees), "no request of the cut reached a callee"
