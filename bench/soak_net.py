"""The mesh of `python -m bench.soak --partitions`, one network namespace per process, and its faults.

Tansu, monitors m1 and m2, echo instances e1 (joined through m1, then m2) and e2 (m2, then m1), and the
callers' host: the netfault tests' machinery (tests/support/netns.py's Network, tests/netfaults/_mesh.py's
NetMesh). Every process listens on its own host's address; the bench reaches them over the observer link.
A fault (bench.soak.FAULTS) is a set of nftables cuts on the bridge, as in tests/netfaults:

- ``callee-broker``: an echo instance cut from the broker, both ways
- ``callee-monitor``: an echo instance cut from the monitor that holds it, both ways
- ``broker-caller``: one way, what the broker sends to the callers' host is lost
- ``split-brain``: m2 cut from the broker, both ways; monitors hear each other only through the broker's
  log (docs/protocol/presence.md), so m1 and m2 each take the other for dead
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.soak import FAULTS
from tests.netfaults._mesh import NetMesh, NetNode
from tests.support.mesh_fixtures import connections_of, monitor_info, routes_of
from tests.support.netns import Host, Network
from tests.support.servers import REPO

ECHO_APP = "bench.echo_app:app"
# a benchmark measures: no process ends itself when the broker is out of reach (bench/mesh.py does the same)
COMMON = {"connector.watchdog.exit.after": "0"}
# the split's release within a fault's few seconds: 3 + 2 s, not 3 + 10 (as tests/netfaults/test_split_brain)
MONITORS = {**COMMON, "monitor.orphan.grace": "2"}

Cut = tuple[Host, Host]


class SoakMesh:
    """Tansu, two monitors, two echo instances and the callers' host, each in a namespace; a context manager
    (everything stopped on exit, the logs kept in ``logs``)."""

    def __init__(self, network: Network, logs: Path) -> None:
        self.network = network
        self.logs = logs
        self._saved = itertools.count()
        self.net = NetMesh(network, logs)
        try:
            self.monitors = self.net.side_by_side(
                lambda: self.net.monitor("m1", MONITORS), lambda: self.net.monitor("m2", MONITORS)
            )
            self.callees = self.net.side_by_side(lambda: self._echo("e1"), lambda: self._echo("e2"))
            self.caller_host = network.host("caller")
        except BaseException:
            self.close()
            raise

    def _echo(self, name: str) -> NetNode:
        return self.net.app(name, ECHO_APP, ["m1", "m2"] if name == "e1" else ["m2", "m1"], COMMON)

    @property
    def presence(self) -> str:
        return ",".join(m.presence_url for m in self.monitors)

    def start_callers(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """bench.soak_caller in the callers' namespace; JSON lines on its stdout, its stderr to a log."""
        program = [sys.executable, "-m", "bench.soak_caller", "--bootstrap", self.net.bootstrap]
        command = self.network.command(self.caller_host, [*program, "--presence", self.presence, *argv])
        with (self.logs / "callers.log").open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                # glibc's per-thread arenas grow with every caller app's librdkafka threads, replaced every
                # --retire-after requests: capped, the RSS shows what meshkit keeps, not what malloc does
                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a Ctrl-C for the bench must not reach it before the report
            )
        self.network.track(process)
        return process

    def kill_and_restart(self, index: int) -> None:
        """SIGKILL echo instance ``index`` and start a fresh one on the same host (a new origin)."""
        node = self.callees[index]
        self._save_log(node)
        node.node.process.stop(signal.SIGKILL)
        self.callees[index] = self._echo(node.host.name)  # if this raises, the next kill tries again

    def missing(self) -> list[str]:
        """What keeps the mesh from being whole (empty: whole): each monitor holds both echo instances,
        each instance routes bench.echo to the other."""
        names = {c.origin: c.host.name for c in self.callees}
        gaps = []
        try:
            for monitor in self.monitors:
                if lacking := set(names) - set(connections_of(monitor.node)):
                    gaps.append(f"{monitor.host.name} lacks {sorted(names[o] for o in lacking)}")
            for callee in self.callees:
                routed = set(routes_of(callee.node).get("bench.echo", {})) | {callee.origin}
                if lacking := set(names) - routed:
                    gaps.append(f"{callee.host.name} has no route to {sorted(names[o] for o in lacking)}")
        except httpx.HTTPError as exc:
            gaps.append(f"no answer: {type(exc).__name__}: {exc}")
        return gaps

    def wait_whole(self, timeout: float) -> tuple[float | None, list[str]]:
        """(seconds until whole, []) or (None, what is still missing) after ``timeout``."""
        began = time.monotonic()
        while True:
            gaps = self.missing()
            if not gaps:
                return round(time.monotonic() - began, 1), []
            if time.monotonic() - began > timeout:
                return None, gaps
            time.sleep(0.2)

    def pids(self) -> dict[str, int]:
        """The monitors' pids, by host name (one pid namespace: ``ip netns exec`` execs the program)."""
        return {m.host.name: m.node.pid for m in self.monitors}

    # -- faults ----------------------------------------------------------------------------------------------
    def cut(self, kind: str, victim: int) -> list[Cut]:
        """Apply fault ``kind`` (echo instance ``victim`` where it takes one); the cuts, for :meth:`heal`."""
        broker, callee = self.net.broker, self.callees[victim]
        if kind == "callee-broker":
            cuts = [(callee.host, broker)]
        elif kind == "callee-monitor":
            cuts = [(callee.host, m.host) for m in self._monitors_of(callee)]
        elif kind == "broker-caller":
            self.network.cut(broker, self.caller_host, one_way=True)
            return [(broker, self.caller_host)]
        elif kind == "split-brain":
            cuts = [(self.monitors[1].host, broker)]
        else:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULTS)}")
        for host, peer in cuts:
            self.network.cut(host, peer)
        return cuts

    def heal(self, cuts: Sequence[Cut]) -> None:
        for host, peer in cuts:
            self.network.heal(host, peer)

    def _monitors_of(self, callee: NetNode) -> list[NetNode]:
        """The monitor holding ``callee`` by m1's view (every monitor, if none is known)."""
        try:
            held = {c["origin"]: c["monitor"] for c in monitor_info(self.monitors[0].node)["connections"]}
        except httpx.HTTPError:
            held = {}
        mine = [m for m in self.monitors if m.origin == held.get(callee.origin)]
        return mine or list(self.monitors)

    # -- cleanup ---------------------------------------------------------------------------------------------
    def _save_log(self, node: NetNode) -> None:
        path = self.logs / f"{node.host.name}-{next(self._saved)}.log"
        path.write_text(node.log(), errors="replace")

    def close(self) -> None:
        """Keep the logs of what still runs, then stop it all (NetMesh, then the network on its own close)."""
        for node in [*getattr(self, "monitors", []), *getattr(self, "callees", [])]:
            self._save_log(node)
        self.net.close()

    def __enter__(self) -> SoakMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
