"""`python -m bench.soak --partitions`: the soak in network namespaces, with link cuts beside the kills.

Every `--partition-every` seconds one fault of bench/soak_net.py (callee-broker, callee-monitor,
broker-caller, split-brain, in turn; `--faults` to choose) is applied for `--partition-for` seconds, then
healed; every `--kill-every` seconds an echo instance is SIGKILLed and restarted. One at a time: a kill
waits while a fault is on and SETTLE seconds after its heal, a fault waits for a restart, and each waits for
the mesh to be whole again (both echo instances held by both monitors, each routing to the other). The
callers run in a process of their own in the callers' namespace (bench/soak_caller.py); the bench process
only orchestrates and reads /proc.

RSS: of the callers' process and of each monitor, read once `--warmup` requests have been answered (by
default a quarter of the run, at most 25,000: past the first replacement of every caller app, 8 x 2,000 on
Tansu, when caches, consumers and allocator have settled), again every 5 s (`rss_trace`), and at the end
while they all still run. Flat: the end within RSS_MARGIN_MB of that warmed-up start.

Needs root, ip and nft; where namespaces cannot be made it says why and exits 2. Its traffic goes only to
the addresses of the namespaces it made.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.mesh import status_kb
from bench.soak import FAULTS, HUNG_GRACE, TIMEOUT
from bench.soak_net import SoakMesh
from tests.support.netns import Network, unavailable

RSS_MARGIN_MB = 10.0  # end minus warmed-up start, per process, that still counts as flat
WHOLE_WITHIN = 30.0  # seconds a healed fault or a restart has to make the mesh whole again
# presence.timeout: a monitor drops an app silent for 8 s, and after a cut of a few seconds TCP's back-off
# can hold the app's keep-alives past that; no kill or fault until then (one fault at a time)
SETTLE = 8.0
AFTERMATH = 10.0  # seconds after a fault's heal (or a restart) whose failures are still put down to it


class Unavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ip or nft, ...)."""


class Chaos:
    """The kills and the faults, in two threads that take turns (one lock); every one noted with its time."""

    def __init__(
        self,
        mesh: SoakMesh,
        kill_every: float,
        partition_every: float,
        partition_for: float,
        faults: Sequence[str],
    ) -> None:
        self.mesh = mesh
        self.kill_every = kill_every
        self.partition_every = partition_every
        self.partition_for = partition_for
        self.faults = list(faults)
        self.applied: collections.Counter[str] = collections.Counter()
        self.kills = 0
        self.events: list[tuple[float, float, str]] = []  # (monotonic start, end, kind)
        self.timeline: list[dict[str, Any]] = []  # what happened when, from the callers' start
        self.began = time.monotonic()
        self.problems: list[str] = []
        self._turn = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guarded, args=(f,), daemon=True) for f in self._jobs()]

    def _jobs(self) -> list[Any]:
        return [j for j, on in ((self._killer, self.kill_every > 0), (self._cutter, bool(self.faults))) if on]

    def start(self) -> Chaos:
        self.began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """No more faults or kills; a fault on now is healed before this returns."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _guarded(self, job: Any) -> None:
        try:
            job()
        except Exception as exc:  # said in the report: a soak without its faults must not pass quietly
            self.problems.append(f"{job.__name__}: {type(exc).__name__}: {exc}")

    def _killer(self) -> None:
        for victim in itertools.cycle((0, 1)):
            if self._stop.wait(self.kill_every):
                return
            with self._turn:
                if self._stop.is_set():
                    return
                began = time.monotonic()
                self.kills += 1
                try:
                    self.mesh.kill_and_restart(victim)
                except Exception as exc:  # the echo did not come back: noted, and the next kill retries
                    self.problems.append(f"restart of e{victim + 1}: {type(exc).__name__}: {exc}"[:500])
                self._note(began, f"kill e{victim + 1}")

    def _cutter(self) -> None:
        due = time.monotonic() + self.partition_every
        for n in itertools.count():
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            kind = self.faults[n % len(self.faults)]
            victim = (n // len(self.faults)) % 2
            with self._turn:
                if self._stop.is_set():
                    return
                began = time.monotonic()  # before the rules: what they catch at once is theirs
                cuts = self.mesh.cut(kind, victim)
                self.applied[kind] += 1
                self._stop.wait(self.partition_for)  # the run's end heals it early
                self.mesh.heal(cuts)
                healed = time.monotonic()
                self._stop.wait(SETTLE)  # a kill now would meet a timeout the cut set off, still to come
                self._note(began, f"{kind} e{victim + 1}" if kind.startswith("callee") else kind, healed)
            due = max(due + self.partition_every, time.monotonic())

    def _note(self, began: float, what: str, ended: float | None = None) -> None:
        """A fault healed or an instance restarted: noted once the mesh is whole again (the next one waits
        for that, so that no kill meets an instance still out of the mesh), or after WHOLE_WITHIN."""
        ended = time.monotonic() if ended is None else ended
        took, gaps = self.mesh.wait_whole(0 if self._stop.is_set() else WHOLE_WITHIN)
        if took is None and not self._stop.is_set():
            self.problems.append(f"not whole {WHOLE_WITHIN:g} s after {what}: {gaps}")
        self.events.append((began, ended, what.split()[0]))
        at = round(began - self.began, 1)
        clock = time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - began)))
        self.timeline.append(
            {
                "at_s": at,
                "clock": clock,
                "what": what,
                "for_s": round(ended - began, 1),
                "whole_after_s": took,
            }
        )

    def blame(self, failures: Sequence[Sequence[Any]]) -> dict[str, dict[str, int]]:
        """Failures by the fault or kill last begun before they ended (within AFTERMATH of its end)."""
        found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        events = sorted(self.events)
        for failed, kind in failures:
            cause = "none"
            for began, ended, what in events:
                if began > failed:
                    break
                cause = what if failed <= ended + AFTERMATH else "none"
            found[cause][kind] += 1
        return {cause: dict(kinds) for cause, kinds in sorted(found.items())}


def _rss(pids: dict[str, int]) -> dict[str, float]:
    return {name: round(status_kb(pid, "VmRSS:") / 1024, 1) for name, pid in pids.items()}


def _lines(process: subprocess.Popen[bytes]) -> Any:
    """The callers' JSON lines, one dict at a time; ends when the process closes its stdout."""
    assert process.stdout is not None
    for raw in process.stdout:
        try:
            yield json.loads(raw)
        except json.JSONDecodeError:  # not ours (a library's print): passed on, not lost
            sys.stderr.write(raw.decode(errors="replace"))


def soak_partitions(
    requests: int,
    *,
    kill_every: float,
    partition_every: float,
    partition_for: float,
    faults: Sequence[str] = FAULTS,
    in_flight: int = 64,
    callers: int = 8,
    retire_after: int = 2000,
    warmup: int | None = None,
    fetch_wait_ms: int | None = None,
    rate: float = 0.0,
) -> dict[str, Any]:
    """The run's report; raises Unavailable where namespaces cannot be made."""
    reason = unavailable()
    if reason is not None:
        raise Unavailable(reason)
    began = time.monotonic()
    warmup = max(1, min(25_000, requests // 4)) if warmup is None else warmup
    logs = Path(tempfile.mkdtemp(prefix="meshkit-soak-"))
    argv = [f"--requests={requests}", f"--in-flight={in_flight}", f"--callers={callers}"]
    argv += [f"--retire-after={retire_after}", f"--warmup={warmup}", f"--rate={rate}"]
    argv += [f"--fetch-wait-ms={fetch_wait_ms}"] if fetch_wait_ms is not None else []
    with Network.create() as network, SoakMesh(network, logs) as mesh:
        process = mesh.start_callers(argv)
        pids = {"callers": process.pid, **mesh.pids()}
        chaos = Chaos(mesh, kill_every, partition_every, partition_for, faults)
        rss_start: dict[str, float] = {}
        rss_end: dict[str, float] = {}
        trace: list[dict[str, float]] = []  # the RSS every 5 s from the warm-up on
        result: dict[str, Any] | None = None
        try:
            for line in _lines(process):
                if "ready" in line:
                    chaos.start()
                elif "warm" in line:
                    rss_start = _rss(pids)
                    trace.append({"answered": line["warm"], **rss_start})
                elif "progress" in line:
                    if rss_start:
                        trace.append({"answered": line["answered"], **_rss(pids)})
                    at = time.monotonic() - began
                    faults_so_far = dict(chaos.applied)
                    print(
                        f"  {at:6.0f} s  {line['progress']}  kills {chaos.kills}  faults {faults_so_far}",
                        file=sys.stderr,
                        flush=True,
                    )
                elif "result" in line:
                    result = line["result"]
                    rss_end = _rss(pids)
                    break
        finally:
            chaos.stop()
            _finish(process)
        if result is None:
            tail = (logs / "callers.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the callers ended without a result (logs in {logs}):\n{tail}")
    trace = trace[:: max(1, len(trace) // 12)]  # a dozen points tell a slope from noise
    return _report(requests, warmup, result, chaos, rss_start or rss_end, rss_end, trace, began, logs)


def _finish(process: subprocess.Popen[bytes]) -> None:
    """Let the callers leave the mesh (stdin closed), SIGKILL after 30 s."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _report(
    requests: int,
    warmup: int,
    result: dict[str, Any],
    chaos: Chaos,
    rss_start: dict[str, float],
    rss_end: dict[str, float],
    trace: list[dict[str, float]],
    began: float,
    logs: Path,
) -> dict[str, Any]:
    rss = {
        name: {"start": start, "end": rss_end[name], "growth": round(rss_end[name] - start, 1)}
        for name, start in rss_start.items()
    }
    errors: dict[str, int] = result["errors"]
    return {
        "name": "mesh soak with partitions",
        "requests": requests,
        "completed": result["completed"],
        "errored": sum(errors.values()),
        "errors": errors,
        "hung": result["hung"],
        "hung_after_s": TIMEOUT + HUNG_GRACE,
        "p99_ms": result["p99_ms"],
        "seconds": result["seconds"],
        "wall_seconds": round(time.monotonic() - began, 1),
        "kills": chaos.kills,
        "faults": {kind: chaos.applied[kind] for kind in chaos.faults},
        "failures_by_fault": chaos.blame(result["failures"]),
        "error_samples": result["error_samples"],
        "callers": result["callers"],
        "callers_replaced": result["callers_replaced"],
        "caller_replacements_failed": result["caller_replacements_failed"],
        "warmup_requests": warmup,
        "rss_mb": rss,
        "rss_margin_mb": RSS_MARGIN_MB,
        "rss_flat": all(r["growth"] <= RSS_MARGIN_MB for r in rss.values()),
        "rss_trace": trace,
        "timeline": chaos.timeline,
        "chaos_problems": chaos.problems,
        "logs": str(logs),
    }
