"""`python -m bench.scale`, small: a mesh of simulated app instances on a fresh broker and two monitors.

It checks what the large runs are read by: every instance holds every other's routes, a leave reaches all,
and a join costs a constant number of records on the broker (a claim and a card), not one per member.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.scale import measure

pytestmark = pytest.mark.kafka

APPS = 24


def test_a_small_mesh_converges_sees_a_leave_and_writes_two_records_per_join() -> None:
    figure = asyncio.run(measure(APPS, workers=2, timeout=60, names=6))
    assert figure.apps == APPS
    assert 0 < figure.converged_s < 60
    assert 0 < figure.leave_seen_s < 5
    # with N^2 answers (a `peer` and `contracts` from every member) this is ~N; with cards 2 and a bit
    assert figure.records.get("log:claim", 0) >= APPS and figure.records.get("log:card", 0) >= APPS
    assert figure.records_per_join < 3, figure.records
    assert not any(kind.startswith("app:") for kind in figure.records), figure.records
    assert figure.monitor_rss_per_app_kb > 0 and figure.monitor_cpu_s > 0
