"""Requests lost in a rolling restart under load, as a user of the REST example sees them (BENCH.md).

    python -m bench.rolling [--json] [--clients 8] [--seconds 2] [--rate 200] [--bootstrap HOST:PORT]
                            [--stop-timeout 40] [--logs DIR] [--loop uvloop|asyncio]

A fresh development broker (or `--bootstrap`), one presence monitor, the REST example and two lambda
examples, every one under `meshkit run` on a free port of 127.0.0.1 with `-Dcloud.connector=kafka`. Once the
REST example routes `hello.pojo` to both lambda origins, `--clients` HTTP clients (aiohttp, keep-alive) loop
`GET /api/pojo/mesh/<n>` on it, and every answer is counted by status; a non-200 answer, a connection error,
a timeout or a 200 for another id is a lost request. After `--seconds` of warm-up:

- phase "rolling-restart": for each of the two original lambda instances in turn, start a replacement, wait
  until the REST example routes to it, then SIGTERM the old one and wait for it to exit (`--stop-timeout`,
  SIGKILL past it);
- phase "sigkill": SIGKILL one of the two current instances, start a replacement, wait until the REST example
  routes to the survivor and the replacement only.

The load runs throughout and for `--seconds` after each phase's last step. A request counts in the phase it
was sent in, and a phase's first step waits until those of the phase before have ended, so what a restart
or a kill costs is counted in its own phase. One JSON object per phase with `--json` (name, sent, lost,
lost_ratio, statuses, sample error bodies, req/s, p50/p99 of the answered, which instance answered, the
steps' timeline), a table otherwise. Every wait is bounded, and every process started is stopped at the end:
on Ctrl-C or SIGTERM too, and the apps get SIGTERM from the kernel if the benchmark itself is killed.
uvicorn re-raises the SIGTERM once its graceful shutdown is done, so an exit code of -15 is a clean exit.

On Tansu the load is paced (`--rate`, requests/s for all clients together): every reply lands on the REST
example's one partition, and a Tansu partition slows past about 4,000 record batches
(`python -m bench.broker_growth`); unpaced, the broker's stall would be counted as the restart's losses.
`--rate 0` sends as fast as the clients go (the default with `--bootstrap`); on Tansu even
`--rate 0 --seconds 1` sends 4,000-5,500 requests on two cores, and a note on stderr says when a run passes
the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import LOOPS, run_async, use_loop
from bench.kafka_floor import phase_broker
from bench.mesh import mesh_settings
from meshkit.devbroker import free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MONITOR_APP = "presence_server.main:app"
REST_APP = "example_services.rest_example.main:app"
LAMBDA_APP = "example_services.lambda_example.main:app"
ROUTE = "hello.pojo"

START_TIMEOUT = 40.0  # an app answering HTTP, and then routed by the REST example
ROUTES_GONE_TIMEOUT = 30.0  # a stopped instance's origin gone from the REST example's routing table
CLIENT_TIMEOUT = 15.0  # one GET; the REST example itself answers 408 after its 5 s mesh timeout
DRAIN_TIMEOUT = CLIENT_TIMEOUT + 5.0  # the load's last requests in flight, at the end
STOP_GRACE = 10.0  # at the end: SIGTERM, then SIGKILL after this
SAMPLES = 5  # sample error bodies kept per phase
SAMPLE_CHARS = 300
TANSU_RATE = 200.0  # req/s for all clients on Tansu: about 2,000 requests in a run of the defaults
TANSU_BUDGET = 4_000  # requests in a run past which Tansu's slowdown is in the figures


class BenchError(RuntimeError):
    """A step of the benchmark failed (not a lost request: those are counted)."""


# -- processes ---------------------------------------------------------------------------------------------
@dataclass
class Proc:
    """One `python -m meshkit.cli run APP` in a session of its own, its output in `log`."""

    name: str
    app: str
    properties: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None
    origin: str = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "meshkit.cli",
            "run",
            self.app,
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        command += ["--log-level", "info", *(f"-D{k}={v}" for k, v in self.properties.items())]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "NO_PROXY": HOST}
        with self.log.open("wb") as out:
            # a session of its own: a Ctrl-C on the benchmark reaches it only through Fleet.close, in order
            self.popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_term_with_parent,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(sig)

    async def exited(self, timeout: float) -> int | None:
        """The exit code once the process has ended, or None if it still runs after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.popen is not None and self.popen.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        return None if self.popen is None else self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text("utf-8", "replace") if self.log.exists() else ""
        return "\n".join(f"    | {line}" for line in text.splitlines()[-lines:]) or "    | (no output)"


def _term_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM if the benchmark dies without its teardown
    (SIGKILL, os._exit), so no app outlives it (as meshkit.devbroker does for Tansu)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Fleet:
    """Every process the benchmark starts; `close()` stops them all (apps first, then the monitor)."""

    def __init__(self, common: dict[str, str], logs: Path) -> None:
        self.common = common
        self.logs = logs
        self.procs: list[Proc] = []
        self._lambdas = 0

    def spawn(self, name: str, app: str, properties: dict[str, str], port: int | None = None) -> Proc:
        proc = Proc(name, app, {**self.common, **properties}, self.logs / f"{name}.log", port or free_port())
        self.procs.append(proc)
        proc.start()
        return proc

    def spawn_lambda(self) -> Proc:
        self._lambdas += 1
        return self.spawn(f"lambda-{self._lambdas}", LAMBDA_APP, _MESH_APP)

    def close(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE s; a second Ctrl-C meanwhile is ignored (nothing left)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            monitors = [p for p in self.procs if p.app == MONITOR_APP]
            for batch in ([p for p in self.procs if p not in monitors], monitors):
                running = [p for p in batch if p.running]
                for proc in running:
                    proc.send(signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE
                for proc in running:
                    assert proc.popen is not None
                    try:
                        proc.popen.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        proc.popen.kill()
                        proc.popen.wait()
        finally:
            signal.signal(signal.SIGINT, previous)


_MESH_APP = {"cloud.connector": "kafka", "mandatory.health.dependencies": "cloud.connector.health"}


# -- waiting -----------------------------------------------------------------------------------------------
async def _get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        return await response.json() if response.status == 200 else None


async def until(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float, watched: list[Proc]
) -> float:
    """Poll `check` every 0.1 s; seconds taken. BenchError when a watched process exits or time runs out."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            if await check():
                return time.monotonic() - started
        for proc in watched:
            if not proc.running:
                code = proc.popen.returncode if proc.popen else None
                raise BenchError(f"{proc.name} exited ({code}) while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() - started > timeout:
            raise BenchError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def started(http: aiohttp.ClientSession, proc: Proc) -> None:
    """Until the app's /livenessprobe answers 200 (its mesh connector healthy); then its origin."""

    async def live() -> bool:
        async with http.get(proc.url + "/livenessprobe", timeout=aiohttp.ClientTimeout(total=2)) as answer:
            return answer.status == 200

    await until(f"{proc.name} to be live", live, START_TIMEOUT, [proc])
    info = await _get_json(http, proc.url + "/info/routes")
    if not info or not info.get("origin"):
        raise BenchError(f"{proc.name} gave no origin at /info/routes: {info!r}")
    proc.origin = info["origin"]


async def routed_to(http: aiohttp.ClientSession, rest: Proc) -> set[str]:
    """The origins the REST example's routing table (/info/routes) lists for hello.pojo."""
    table = await _get_json(http, rest.url + "/info/routes")
    return set(table["routing"]["routes"].get(ROUTE, {})) if table else set()


async def routes_become(
    http: aiohttp.ClientSession,
    rest: Proc,
    present: list[Proc],
    absent: list[Proc],
    watched: list[Proc],
    timeout: float = START_TIMEOUT,
) -> float:
    """Until the REST example routes hello.pojo to every origin of `present` and to none of `absent`."""

    async def check() -> bool:
        origins = await routed_to(http, rest)
        return all(p.origin in origins for p in present) and not any(p.origin in origins for p in absent)

    names = "+".join(p.name for p in present) + "".join(f", not {p.name}" for p in absent)
    return await until(f"the REST example to route {ROUTE} to {names}", check, timeout, watched)


# -- the load ----------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """What the clients saw for the requests they sent during one phase."""

    sent: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    served_by: collections.Counter[str] = field(default_factory=collections.Counter)  # origin -> answers
    latencies: list[float] = field(default_factory=list)  # seconds, of the answered (200) requests
    samples: list[str] = field(default_factory=list)
    began: float = 0.0
    ended: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses["200"]

    @property
    def done(self) -> int:
        """Requests that have ended, one way or another."""
        return sum(self.statuses.values())

    @property
    def lost(self) -> int:
        """Requests that ended without their PoJo (those still in flight are not counted yet)."""
        return self.done - self.ok

    def lose(self, status: str, text: str) -> None:
        self.statuses[status] += 1
        sample = f"{status}: {' '.join(text.split())[:SAMPLE_CHARS]}"
        if len(self.samples) < SAMPLES and sample not in self.samples:
            self.samples.append(sample)

    def answered(self, origin: str, seconds: float) -> None:
        self.statuses["200"] += 1
        self.served_by[origin] += 1
        self.latencies.append(seconds)

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 1)


class Load:
    """`clients` HTTP clients, each with a keep-alive connection of its own, looping the REST example's
    /api/pojo/mesh/<n>, paced to `rate` req/s in all (0: unpaced). A request counts in the phase it was
    sent in."""

    def __init__(self, url: str, clients: int, rate: float) -> None:
        self.url = url
        self.clients = clients
        self.interval = clients / rate if rate > 0 else 0.0
        self.phase: str | None = None
        self.tallies: dict[str, Tally] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = asyncio.Event()  # set as each request ends

    def enter(self, phase: str) -> Tally:
        now = time.monotonic()
        if self.phase is not None:
            self.tallies[self.phase].ended = now
        self.phase = phase
        self.tallies[phase] = Tally(began=now)
        return self.tallies[phase]

    async def settled(self) -> float:
        """Until every request sent before the current phase has ended (bounded by CLIENT_TIMEOUT): a phase's
        first step must not hit requests that count in the phase before. Returns the seconds waited."""
        started = time.monotonic()
        earlier = [t for name, t in self.tallies.items() if name != self.phase]
        deadline = time.monotonic() + CLIENT_TIMEOUT + 1
        while any(t.done < t.sent for t in earlier) and (left := deadline - time.monotonic()) > 0:
            self._ended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), left)
        return time.monotonic() - started

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]

    async def stop(self, drain: float = DRAIN_TIMEOUT) -> None:
        """No new requests; those in flight end (bounded: `drain` s, then counted as "unfinished")."""
        if self.phase is not None:
            self.tallies[self.phase].ended = time.monotonic()
        self.phase = None
        if self._tasks:
            pending: set[asyncio.Task[None]] = set(self._tasks)
            if drain > 0:
                _, pending = await asyncio.wait(self._tasks, timeout=drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, number: int) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        sequence = 0
        next_at = time.monotonic() + self.interval * number / self.clients  # spread the clients' turns
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http:
            while self.phase is not None:
                if self.interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at = max(next_at + self.interval, time.monotonic())
                phase = self.phase
                if phase is None:
                    break
                tally = self.tallies[phase]
                sequence += 1
                pojo_id = number * 1_000_000 + sequence
                tally.sent += 1
                try:
                    await self._one(http, pojo_id, tally)
                    self._ended.set()
                except asyncio.CancelledError:
                    tally.lose("unfinished", f"still in flight {DRAIN_TIMEOUT:.0f} s after the load ended")
                    raise

    async def _one(self, http: aiohttp.ClientSession, pojo_id: int, tally: Tally) -> None:
        began = time.perf_counter()
        try:
            async with http.get(f"{self.url}/api/pojo/mesh/{pojo_id}") as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            tally.lose("timeout", f"no answer within {CLIENT_TIMEOUT:.0f} s")
            return
        except aiohttp.ClientError as exc:
            tally.lose(f"connection error ({type(exc).__name__})", str(exc))
            return
        except Exception as exc:  # whatever it is, the user lost the request; the load goes on
            tally.lose(f"error ({type(exc).__name__})", str(exc))
            return
        if status != 200:
            tally.lose(str(status), text)
            return
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("id") != pojo_id:
            tally.lose("200 with a wrong body", text)
            return
        tally.answered(str(body.get("origin")), time.perf_counter() - began)


# -- the benchmark -----------------------------------------------------------------------------------------
@dataclass
class Timeline:
    """Steps of a phase: (seconds since the phase began, what happened)."""

    began: float
    steps: list[tuple[float, str]] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        self.steps.append((round(time.monotonic() - self.began, 2), text))


@dataclass
class Phase:
    name: str
    tally: Tally
    timeline: Timeline
    extra: dict[str, Any] = field(default_factory=dict)


async def _replace(http: aiohttp.ClientSession, fleet: Fleet, rest: Proc, keep: list[Proc]) -> Proc:
    """A new lambda instance, started and routed by the REST example beside `keep`."""
    new = fleet.spawn_lambda()
    await started(http, new)
    await routes_become(http, rest, [*keep, new], [], [rest, new])
    return new


async def _rolling(
    http: aiohttp.ClientSession,
    fleet: Fleet,
    load: Load,
    rest: Proc,
    lambdas: list[Proc],
    stop_timeout: float,
) -> Phase:
    phase = Phase("rolling-restart", load.enter("rolling-restart"), Timeline(time.monotonic()))
    note = phase.timeline
    if (waited := await load.settled()) > 0.1:
        note(f"waited {waited:.2f} s for the requests of the phase before to end")
    exits: list[float] = []
    exit_codes: list[int | None] = []
    for old in list(lambdas):
        others = [p for p in lambdas if p is not old]
        note(f"start a replacement for {old.name}")
        new = await _replace(http, fleet, rest, [old, *others])
        note(f"{new.name} routed; SIGTERM {old.name}")
        sent = time.monotonic()
        old.send(signal.SIGTERM)
        code = await old.exited(stop_timeout)
        if code is None:
            note(f"{old.name} still running {stop_timeout:.0f} s after SIGTERM: SIGKILL")
            old.send(signal.SIGKILL)
            code = await old.exited(5.0)
        exits.append(round(time.monotonic() - sent, 2))
        exit_codes.append(code)
        note(f"{old.name} exited ({code})")
        lambdas[lambdas.index(old)] = new
        gone = await routes_become(http, rest, [*others, new], [old], [rest], ROUTES_GONE_TIMEOUT)
        if gone > 0.1:
            note(f"{old.name} gone from the REST example's routes {gone:.1f} s after its exit")
    phase.extra = {"sigterm_to_exit_s": exits, "exit_codes": exit_codes}
    return phase


async def _sigkill(
    http: aiohttp.ClientSession, fleet: Fleet, load: Load, rest: Proc, lambdas: list[Proc]
) -> Phase:
    phase = Phase("sigkill", load.enter("sigkill"), Timeline(time.monotonic()))
    note = phase.timeline
    if (waited := await load.settled()) > 0.1:
        note(f"waited {waited:.2f} s for the requests of the phase before to end")
    victim, survivor = lambdas
    note(f"SIGKILL {victim.name}; start a replacement")
    killed = time.monotonic()
    victim.send(signal.SIGKILL)

    async def routes_gone() -> float:  # polled every 0.1 s, while the replacement starts
        await routes_become(http, rest, [survivor], [victim], [rest, survivor], ROUTES_GONE_TIMEOUT)
        return time.monotonic() - killed

    gone = asyncio.create_task(routes_gone())
    new = fleet.spawn_lambda()
    try:
        await started(http, new)
        gone_after = await gone
    finally:
        gone.cancel()
    note(f"{victim.name} gone from the REST example's routes, {gone_after:.2f} s after its SIGKILL")
    await routes_become(http, rest, [survivor, new], [victim], [rest, survivor, new])
    note(f"{new.name} routed")
    lambdas[:] = [survivor, new]
    phase.extra = {"sigkill_to_routes_gone_s": round(gone_after, 2)}
    return phase


async def measure(
    fleet: Fleet,
    monitor_port: int,
    clients: int,
    seconds: float,
    rate: float,
    stop_timeout: float,
    progress: bool,
) -> tuple[list[Phase], int]:
    """The phases measured, and the requests sent in all (warm-up included)."""

    def say(text: str) -> None:
        if progress:
            print(f"  {text}", file=sys.stderr, flush=True)

    async with aiohttp.ClientSession(trust_env=False) as http:
        monitor = fleet.spawn("monitor", MONITOR_APP, {}, monitor_port)  # where presence.url points
        await until(
            "the monitor to answer", lambda: _answers(http, monitor.url + "/livenessprobe"), 40, [monitor]
        )
        rest = fleet.spawn("rest", REST_APP, _MESH_APP)
        lambdas = [fleet.spawn_lambda(), fleet.spawn_lambda()]
        for proc in (rest, *lambdas):
            await started(http, proc)
        await routes_become(http, rest, lambdas, [], [rest, *lambdas])
        say(f"mesh up: the REST example routes {ROUTE} to {lambdas[0].name} and {lambdas[1].name}")
        load = Load(rest.url, clients, rate)
        warmup = load.enter("warm-up")
        load.start()
        phases: list[Phase] = []
        try:
            await asyncio.sleep(seconds)
            percentiles = f"p50 {warmup.percentile_ms(0.5)} ms, p99 {warmup.percentile_ms(0.99)} ms"
            lost = f"{warmup.lost} of {warmup.done} lost {warmup.samples or ''}"
            say(f"warm-up (no restart): {warmup.sent / seconds:.0f} req/s, {percentiles}, {lost}")
            say("rolling restart")
            phases.append(await _rolling(http, fleet, load, rest, lambdas, stop_timeout))
            await asyncio.sleep(seconds)
            say("sigkill")
            phases.append(await _sigkill(http, fleet, load, rest, lambdas))
            await asyncio.sleep(seconds)
        except BaseException:  # a failed step or Ctrl-C: no waiting for the requests in flight
            await load.stop(drain=0)
            raise
        await load.stop()
        return phases, sum(tally.sent for tally in load.tallies.values())


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
        return answer.status < 500


def row(phase: Phase, clients: int, rate: float, names: dict[str, str]) -> dict[str, Any]:
    """One phase's JSON object; `names` maps origins to the benchmark's process names (lambda-1...)."""
    tally = phase.tally
    seconds = max(tally.ended - tally.began, 1e-9)
    lost = tally.sent - tally.ok  # every request has ended by now: answered, lost, or "unfinished"
    served_by = collections.Counter({names.get(o, o): n for o, n in tally.served_by.items()})
    return {
        "name": phase.name,
        "clients": clients,
        "rate": rate or None,
        "seconds": round(seconds, 1),
        "sent": tally.sent,
        "lost": lost,
        "lost_ratio": round(lost / tally.sent, 5) if tally.sent else None,
        "rps": round(tally.sent / seconds, 1),
        "p50_ms": tally.percentile_ms(0.5),
        "p99_ms": tally.percentile_ms(0.99),
        "statuses": dict(sorted(tally.statuses.items())),
        "samples": tally.samples,
        "served_by": dict(sorted(served_by.items())),
        **phase.extra,
        "timeline": phase.timeline.steps,
    }


def run(
    clients: int = 8,
    seconds: float = 2.0,
    rate: float | None = None,
    bootstrap: str | None = None,
    stop_timeout: float = 40.0,
    logs: str | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The benchmark's rows, one per phase. `rate` None: TANSU_RATE on Tansu, unpaced with `bootstrap`."""
    paced = (0.0 if bootstrap else TANSU_RATE) if rate is None else rate
    with _log_dir(logs) as directory, phase_broker(bootstrap) as servers:
        monitor_port = free_port()
        fleet = Fleet(mesh_settings(servers, monitor_port), directory)
        try:
            phases, sent = run_async(
                measure(fleet, monitor_port, clients, seconds, paced, stop_timeout, progress)
            )
        except BenchError as exc:
            tails = "\n".join(f"  {p.name} ({p.log.name}):\n{p.tail(10)}" for p in fleet.procs)
            raise BenchError(f"{exc}\nlast lines of each log:\n{tails}") from None
        finally:
            fleet.close()
    if not bootstrap and sent > TANSU_BUDGET:
        print(
            f"note: {sent} requests in this run; past about {TANSU_BUDGET} Tansu's memory log slows"
            " (python -m bench.broker_growth) and the figures include it: lower --rate or --seconds",
            file=sys.stderr,
        )
    names = {p.origin: p.name for p in fleet.procs if p.origin}
    return [row(phase, clients, paced, names) for phase in phases]


@contextlib.contextmanager
def _log_dir(keep: str | None) -> Iterator[Path]:
    """`keep` (created, left in place), or a temporary directory removed afterwards."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="meshkit-rolling-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def report(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r), flush=True)
        return
    print(
        f"{'phase':<17} {'sent':>7} {'lost':>6} {'lost %':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'s':>6}  statuses"
    )
    for r in rows:
        ratio = f"{100 * r['lost_ratio']:.2f}%" if r["lost_ratio"] is not None else "-"
        statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
        counts = f"{r['sent']:>7} {r['lost']:>6} {ratio:>8} {r['rps']:>7.0f}"
        counts += f" {r['p50_ms'] or 0:>7.1f} {r['p99_ms'] or 0:>7.1f} {r['seconds']:>6.1f}"
        print(f"{r['name']:<17} {counts}  {statuses}")
    for r in rows:
        print(f"{r['name']}:")
        for at, step in r["timeline"]:
            print(f"  {at:6.2f} s  {step}")
        for sample in r["samples"]:
            print(f"  lost: {sample}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rolling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="load before the first phase and after each (default 2)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help=f"req/s for all clients, 0 unpaced (default {TANSU_RATE:.0f} on Tansu, else 0)",
    )
    parser.add_argument("--stop-timeout", type=float, default=40.0, help="SIGTERM to exit, then SIGKILL")
    parser.add_argument("--bootstrap", help="a Kafka cluster to use instead of a fresh Tansu broker")
    parser.add_argument("--logs", help="keep every process's log in this directory")
    parser.add_argument("--loop", choices=LOOPS, default="uvloop", help="the clients' event loop")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    use_loop(args.loop)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` or `timeout`: the same teardown as Ctrl-C
    try:
        rows = run(
            args.clients, args.seconds, args.rate, args.bootstrap, args.stop_timeout, args.logs, progress=True
        )
    except BenchError as exc:
        print(f"rolling restart benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process it started is stopped", file=sys.stderr)
        return 130
    report(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
