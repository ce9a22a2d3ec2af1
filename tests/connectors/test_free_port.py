"""free_port hands out ports no other process takes before they are used: below the ephemeral range."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshkit import devbroker
from meshkit.devbroker import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
needs_the_range = pytest.mark.skipif(not RANGE.exists(), reason="no ephemeral range to read (not Linux)")


def ephemeral() -> tuple[int, int]:
    low, high = RANGE.read_text().split()
    return int(low), int(high)


def bind(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


@needs_the_range
def test_a_port_is_below_the_range_bind_zero_takes_from_and_free() -> None:
    low, _ = ephemeral()
    port = free_port()
    assert 10_000 <= port < low
    bind(port).close()  # nothing holds it


@needs_the_range
def test_ports_are_never_handed_out_twice_in_a_row_of_many() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


@needs_the_range
def test_a_port_something_holds_is_passed_over() -> None:
    before = free_port()
    first, size = devbroker._stretch()
    # the walk goes port by port through its stretch: the next one, taken now, is skipped
    taken = first + (before + 1 - first) % size
    with bind(taken):
        after = free_port()
    assert after != taken
    assert first <= after < first + size


@needs_the_range
def test_parallel_test_workers_walk_stretches_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    low, _ = ephemeral()
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    handed: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setattr(devbroker, "_walk", None)  # a new worker's walk
        handed[worker] = {free_port() for _ in range(100)}
    middle = 10_000 + (low - 10_000) // 2
    assert all(10_000 <= port < middle for port in handed["gw0"])
    assert all(middle <= port < low for port in handed["gw1"])


@needs_the_range
def test_two_processes_walk_from_different_places() -> None:
    script = "from meshkit.devbroker import free_port; print(free_port())"
    ports = {int(subprocess.check_output([sys.executable, "-c", script], text=True)) for _ in range(2)}
    mine = free_port()
    assert len(ports | {mine}) == 3


def test_without_a_range_to_read_it_is_bind_zeros_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devbroker, "_EPHEMERAL_RANGE", Path("/nonexistent/ip_local_port_range"))
    port = free_port()
    bind(port).close()
    if RANGE.exists():
        low, high = ephemeral()
        assert low <= port <= high
