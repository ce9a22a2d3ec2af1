"""A mesh that loses nothing while it moves: real processes on a real broker, under load from outside.

The REST example calls `hello.pojo` (declared safe to retry) through the mesh for 8 HTTP clients while the
lambda examples serving it are replaced with SIGTERM (what Kubernetes sends on every deploy), SIGKILLed, or
hung with SIGSTOP. `mesh.once` (tests/apps/mesh_echo.py) is a route not declared safe.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.load import Load
from tests.support.mesh_fixtures import (
    CALLEE_APP,
    CALLER_APP,
    LAMBDA_APP,
    REST_APP,
    Mesh,
    Node,
    routes_of,
    serves,
)

pytestmark = pytest.mark.kafka

#: the shipped defaults where a test measures them (the fixtures shorten drain.quiet for speed elsewhere)
DEFAULTS = {"drain.quiet": "1.0"}


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        running.monitor()
        yield running


def pojo_load(rest: Node, clients: int = 8) -> Load:
    return Load(lambda n: f"{rest.url}/api/pojo/mesh/{n}", clients=clients)


def report(name: str, load: Load, since: float = 0.0) -> str:
    failures = load.failures(since)
    samples = Counter(f"{o.status} {o.text[:120]}" for o in failures).most_common(3)
    return f"{name}: {len(failures)} of {load.sent(since)} failed {dict(load.statuses())} {samples}"


def test_a_rolling_restart_of_every_instance_under_load_loses_no_request(mesh: Mesh) -> None:
    rest = mesh.app(REST_APP)
    current = [mesh.app(LAMBDA_APP, DEFAULTS), mesh.app(LAMBDA_APP, DEFAULTS)]
    wait_until(lambda: serves(rest, "hello.pojo", [n.origin for n in current]), timeout=10, what="both")
    with pojo_load(rest) as load:
        load.wait_for(100)
        for old in list(current):
            new = mesh.app(LAMBDA_APP, DEFAULTS)
            wait_until(
                lambda fresh=new: fresh.origin in routes_of(rest).get("hello.pojo", {}),
                timeout=10,
                what="the new one at rest",
            )
            load.wait_for(50)
            signalled = time.monotonic()
            exit_code = old.process.stop(signal.SIGTERM)  # drains, then leaves
            took = time.monotonic() - signalled
            assert exit_code in (0, -signal.SIGTERM), old.log()[-2000:]
            assert "drained in" in old.log(), old.log()[-2000:]
            assert took < 10, f"{old!r} took {took:.1f} s to stop"
            current = [n for n in current if n is not old] + [new]
        load.wait_for(100)
    print(report("rolling restart", load))
    assert load.failures() == [], report("rolling restart", load)
    assert load.sent() > 300


def test_sigkill_of_one_of_two_loses_no_request_to_a_route_safe_to_retry(mesh: Mesh) -> None:
    rest = mesh.app(REST_APP)
    first, second = mesh.app(LAMBDA_APP), mesh.app(LAMBDA_APP)
    wait_until(lambda: serves(rest, "hello.pojo", [first.origin, second.origin]), timeout=10, what="both")
    with pojo_load(rest) as load:
        load.wait_for(100)
        mesh.kill(first)
        wait_until(lambda: not serves(rest, "hello.pojo", [first.origin]), timeout=10, what="first gone")
        load.wait_for(100)
    print(report("sigkill, safe route", load))
    assert load.failures() == [], report("sigkill, safe route", load)
    assert "sent again" in rest.log() or f"Peer {first.origin}" in rest.log()


def test_sigkill_with_a_route_not_safe_to_retry_fails_fast_and_never_runs_a_request_twice(mesh: Mesh) -> None:
    caller = mesh.app(CALLER_APP)
    first, second = mesh.app(CALLEE_APP), mesh.app(CALLEE_APP)
    wait_until(lambda: serves(caller, "mesh.once", [first.origin, second.origin]), timeout=10, what="both")
    # each request takes 0.2 s, so that some are in flight at the one that dies
    load = Load(lambda n: f"{caller.url}/call/mesh.once?seconds=0.2&mark={n}", clients=8)
    with load:
        load.wait_for(40)
        mesh.kill(first)
        wait_until(lambda: not serves(caller, "mesh.once", [first.origin]), timeout=10, what="first gone")
        load.wait_for(40)
    bodies = [o.text for o in load.outcomes]
    failed = [b for b in bodies if '"status":200' not in b]
    # the caller's /call answers 200 with the outcome inside: every failure is a fast 503, peer left
    assert failed, "no request was in flight at the instance killed: the test proved nothing"
    for body in failed:
        assert '"status":503' in body and "left before replying" in body, body
    elapsed = [o.elapsed for o in load.outcomes if '"status":200' not in o.text]
    assert all(e < 2.0 for e in elapsed), elapsed  # fast: the request's timeout is 5 s
    ran = Counter(
        line.split()[-1]
        for node in (first, second)
        for line in node.log().splitlines()
        if line.startswith("mesh.once ran ")
    )
    assert ran and max(ran.values()) == 1, ran.most_common(3)  # no request ran twice
    print(f"sigkill, route not safe: {len(failed)} of {len(bodies)} failed fast (503), none ran twice")


def test_a_hung_instance_costs_a_bounded_number_of_requests_then_none(mesh: Mesh) -> None:
    rest = mesh.app(REST_APP)
    hung, healthy = mesh.app(LAMBDA_APP), mesh.app(LAMBDA_APP)
    wait_until(lambda: serves(rest, "hello.pojo", [hung.origin, healthy.origin]), timeout=10, what="both")
    with pojo_load(rest) as load:
        load.wait_for(100)
        stopped = mesh.signal(hung, signal.SIGSTOP)
        time.sleep(4.0)  # well within presence.timeout (8 s): the monitor still holds it
        mesh.signal(hung, signal.SIGCONT)
        load.wait_for(50)
    during = load.failures(stopped)
    after_ejection = load.failures(stopped + 1.5)  # outlier.stall is 1 s
    slow = [o for o in load.outcomes if o.at >= stopped + 1.5 and o.elapsed > 1.0]
    print(report("sigstop", load, stopped) + f"; {len(slow)} slow after ejection")
    assert len(during) <= 8, report("sigstop", load, stopped)  # at most what was in flight
    assert after_ejection == [], report("sigstop", load, stopped + 1.5)
    assert len(slow) <= 3, slow  # a probe per ejection (1 s, 2 s, ...) while it stays hung
    assert "out of rotation" in rest.log()
