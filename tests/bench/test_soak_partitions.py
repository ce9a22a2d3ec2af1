"""`python -m bench.soak --partitions`, small: a few hundred paced requests through two link faults.

The processes run in network namespaces as in tests/netfaults (skipped, saying why, where they cannot be
made). The faults: an echo instance cut from the broker, then the broker's packets to the callers lost one
way. No request may hang, and the report carries every figure the long run is read by.
"""

from __future__ import annotations

import pytest

from bench.soak_partitions import soak_partitions
from tests.support.netns import require

pytestmark = pytest.mark.kafka

KEYS = {
    "requests", "completed", "errored", "errors", "hung", "p99_ms", "seconds", "wall_seconds", "kills",
    "faults", "failures_by_fault", "warmup_requests", "rss_mb", "rss_margin_mb", "rss_flat", "chaos_problems",
}  # fmt: skip


def test_the_partition_soak_hangs_no_request_through_two_faults() -> None:
    require()
    report = soak_partitions(
        300,
        kill_every=0,  # no kills: a restart costs seconds of start-up this test has no room for
        partition_every=1.0,
        partition_for=2.0,
        faults=["callee-broker", "broker-caller"],
        in_flight=16,
        callers=2,
        warmup=50,
        rate=60.0,  # paced, so that the run lasts as long as the faults
    )
    assert KEYS <= set(report), KEYS - set(report)
    assert report["hung"] == 0, report
    assert report["completed"] + report["errored"] == 300, report
    assert set(report["errors"]) <= {"408", "503"}, report["error_samples"]
    assert report["faults"]["callee-broker"] >= 1, report["faults"]
    assert report["chaos_problems"] == [], report["chaos_problems"]
    assert set(report["rss_mb"]) == {"callers", "m1", "m2"}
    assert all({"start", "end", "growth"} <= set(r) for r in report["rss_mb"].values()), report["rss_mb"]
