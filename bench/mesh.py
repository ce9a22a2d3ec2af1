"""Mesh PostOffice.request between two processes over the broker, against the bare Kafka floor.

Each measured phase gets a fresh Tansu broker (Tansu's memory log slows as it grows), unless a cluster is
given (`python -m bench --only mesh --bootstrap HOST:PORT`: a real cluster; on one long-lived Tansu the
mesh's partitions, reused from phase to phase, grow into its slowdown), and a fresh monitor and echo app.
Also measured (BENCH.md, "Also reported"): seconds from an app's start to being routable from a peer, and
from its SIGKILL, SIGINT or SIGSTOP to its routes being gone there; the peak RSS of an app and of the
monitor, and what the monitor holds per connected app.

A request without a reply within LOST_AFTER seconds is counted as lost (the figure's "lost") and the run
carries on: on Tansu a consumer at a partition's end can miss an acknowledged record now and then
(`python -m bench.broker_visibility`), seen at 200 KB. A lost request holds its caller for LOST_AFTER, so a
run with losses understates req/s; the median of `--repeat` runs mostly leaves such a run out.
STALL_AFTER lost in a row is a broker that answers nothing any more (at 200 KB a fresh Tansu stalls for good
after about 1,400-1,600 sequential requests: four 64 KB segments each, and a partition stalls past about
5,500 record batches, `python -m bench.broker_growth`): that run is left out of the medians, said so on
stderr, and its losses still count in "lost"; with no run left, the size has its floor and no mesh figure.

At a payload meshkit sends in segments (above `segment.size`, 64 KB by default) the run also measures the
segments floor (bench/kafka_floor.py): bare confluent-kafka sending, for each request and each echo, the
records meshkit sends (at 200 KB three of 65,664 bytes and one of 8,457, in one produce_batch), beside the
floor's one record of 204,808; it is the broker's own price for meshkit's records, and the mesh figure is
given against it too ("mesh, against the segments floor"). `python -m bench --only segments` takes the
floor and the segments floor alone, and the segments floor again with linger.ms=0.1.

Where the 200 KB gap is (issue 14, part 5; 2 shared cores, 2026-12-02, the runs in the figures' ranges):
- Not meshkit's Python: the transport hands an event's four segments to the connector in one loop turn and
  the connector to librdkafka in one produce_batch. With linger.ms=0 librdkafka wakes its broker thread on
  the first record of that call and sends what is queued by then, so the four records leave as about three
  produce requests and record batches (librdkafka's statistics, 300 calls on a fresh Tansu: 951 batches at
  linger.ms=0, 312 at 0.1). The floor's one record is one batch.
- Tansu's cost is per record batch, not per record: a partition filled with 4-record batches still answers
  in 5 ms at 3,000 batches (12,000 records) and stalls at 5,000 (20,000 records), as with 1-record batches
  (`bench.broker_growth`). So a sequential 200 KB run (200 + 2,000 requests, about 3 batches each on each
  partition) crosses the stall: with the defaults all three mesh runs stalled, after 1,778, 1,508 and 1,826
  answered requests, and gave no figure (the floor: 7.8 ms p50, 327 req/s, 293-378). The segments floor
  got through once: 1.43x the floor's p50, 0.72x its req/s - the broker's price for meshkit's records,
  before any meshkit code runs; in two later tries (a machine loaded by others) it lost a request at 64
  in flight, and then stopped answering: the same stall, without meshkit.
- The same four records as one batch cost the broker what one record does: with linger.ms=0.1 on both
  sides the segments floor is 1.05x the floor's p50 and 1.10x its req/s, and the mesh gets through its
  sequential run: 1.22x the floor's p50, 0.76x its req/s, 0.69x the segments floor's (one run each; what
  is left, about a third, is meshkit's own CPU for 200 KB on two cores it shares with the broker).
- linger.ms stays 0 by default: any linger above 0 costs a small event about 1 ms a hop (librdkafka's
  broker thread waits in whole milliseconds), and the floor at 200 B went from 7.1 ms to 8.0-8.3 ms p50.
  On Tansu set `kafka.linger.ms=0.1` for large events; on a real Kafka cluster batches are cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from bench.common import Figure, measure, median_of, run_async
from bench.kafka_floor import PAYLOADS, floor_figure, phase_broker, segmented
from bench.processes import served
from meshkit import AppConfig, Platform, PostOffice
from meshkit.connectors import make_connector
from meshkit.devbroker import free_port
from meshkit.mesh import DEFAULT_SEGMENT_SIZE, join_mesh

MESH_VS_SEGMENTS = "mesh, against the segments floor"
LOST_AFTER = 10.0  # seconds without a reply: a lost request (p99 at 200 KB is well under a second)
STALL_AFTER = 5  # requests lost in a row: the broker has stalled, and the run ends


class MeshStalled(RuntimeError):
    """STALL_AFTER requests in a row had no reply: no figure from this run."""

    def __init__(self, lost: int, answered: int) -> None:
        super().__init__(
            f"{STALL_AFTER} requests in a row lost after {answered} answered ({lost} lost in all)"
        )
        self.lost = lost


@contextlib.contextmanager
def _process(app: str, port: int, properties: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    args = ["meshkit.cli", "run", app, "--port", str(port), "--log-level", "warning"]
    args += [f"-D{k}={v}" for k, v in properties.items()]
    with served(args, f"http://127.0.0.1:{port}/livenessprobe") as process:
        yield process


def mesh_settings(bootstrap: str, monitor_port: int) -> dict[str, str]:
    """What every process of a benchmark mesh is given."""
    # no watchdog exit: a benchmark measures; it must not end itself on a stalled development broker
    return {
        "bootstrap.servers": bootstrap,
        "presence.url": f"ws://127.0.0.1:{monitor_port}/ws/presence",
        "connector.watchdog.exit.after": "0",
    }


@dataclass
class BenchMesh:
    po: PostOffice
    common: dict[str, str]
    monitor: subprocess.Popen[bytes]
    monitor_port: int
    echo: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def _mesh(bootstrap: str | None = None) -> AsyncIterator[BenchMesh]:
    """A fresh broker, a monitor, one echo app, and a caller platform in this process."""
    with phase_broker(bootstrap) as servers:
        monitor_port = free_port()
        common = mesh_settings(servers, monitor_port)
        with (
            _process("presence_server.main:app", monitor_port, common) as monitor,
            _process("bench.echo_app:app", free_port(), {"cloud.connector": "kafka", **common}) as echo,
        ):
            config = AppConfig.load(argv=[], environ={}, overrides={"cloud.connector": "kafka", **common})
            platform = Platform(config, name="bench-caller", functions=[])
            await platform.start()
            try:
                await join_mesh(platform, make_connector(config))
                po = PostOffice(platform)
                await _until(lambda: po.exists("bench.echo"), 20.0)
                yield BenchMesh(po, common, monitor, monitor_port, echo)
            finally:
                await platform.stop()


async def _until(condition: Any, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def mesh_figure(payload_bytes: int, bootstrap: str | None = None) -> Figure:
    payload = os.urandom(payload_bytes)
    lost = in_a_row = answered = 0

    async def call(po: PostOffice) -> None:
        nonlocal lost, in_a_row, answered
        if in_a_row >= STALL_AFTER:  # the other callers of a stalled run: nothing more is sent
            raise MeshStalled(lost, answered)
        try:
            reply = await po.request("bench.echo", payload, timeout=LOST_AFTER)
        except TimeoutError:
            lost += 1  # counted, and the run goes on (warm-up calls included)
            in_a_row += 1
            if in_a_row >= STALL_AFTER:
                raise MeshStalled(lost, answered) from None
            return
        in_a_row = 0
        answered += 1
        if reply.status != 200:
            raise RuntimeError(f"bench.echo answered {reply.status}: {reply.body!r}")

    async with _mesh(bootstrap) as mesh:
        sequential = await measure(
            "mesh PostOffice.request", payload_bytes, lambda: call(mesh.po), throughput_calls=64
        )
    async with _mesh(bootstrap) as mesh:
        loaded = await measure("mesh PostOffice.request", payload_bytes, lambda: call(mesh.po), sequential=64)
    sequential.rps_at_64 = loaded.rps_at_64
    sequential.lost = lost
    return sequential


async def membership_times(bootstrap: str | None = None) -> dict[str, float]:
    """Seconds from an app's start to routable at a peer, and from its SIGKILL, SIGINT or SIGSTOP to its
    routes gone there; peak RSS of an app and of the monitor; the monitor's RSS per connected app."""
    figures: dict[str, float] = {}
    async with _mesh(bootstrap) as mesh:
        po, app = mesh.po, {"cloud.connector": "kafka", **mesh.common}
        before = set(po.search("bench.echo"))
        for how in (signal.SIGKILL, signal.SIGINT, signal.SIGSTOP):
            started = time.monotonic()
            with _process("bench.echo_app:app", free_port(), app) as second:
                await _until(lambda: len(set(po.search("bench.echo")) - before) == 1, 30.0)
                if how == signal.SIGKILL:
                    figures["start_to_routable_s"] = round(time.monotonic() - started, 2)
                second.send_signal(how)
                sent = time.monotonic()
                await _until(lambda: set(po.search("bench.echo")) == before, 30.0)
                figures[f"{how.name.lower()}_to_routes_gone_s"] = round(time.monotonic() - sent, 2)
                if how == signal.SIGSTOP:
                    second.kill()  # a stopped process cannot take the SIGINT that ends the others
        figures["app_peak_rss_mb"] = _peak_rss_mb(mesh.echo.pid)
        figures["monitor_peak_rss_mb"] = _peak_rss_mb(mesh.monitor.pid)
        figures["monitor_rss_per_app_kb"] = await _monitor_rss_per_app(mesh.monitor, mesh.monitor_port)
    return figures


def _peak_rss_mb(pid: int) -> float:
    return round(status_kb(pid, "VmHWM:") / 1024, 1)


def status_kb(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in KB, e.g. "VmRSS:" or "VmHWM:"."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


async def _monitor_rss_per_app(monitor: subprocess.Popen[bytes], port: int, apps: int = 200) -> float:
    """KB of monitor RSS per connected app: `apps` presence sessions (a hello each, as an app sends)."""
    from websockets.asyncio.client import connect

    from meshkit.security import Identity

    key = Identity().public_key
    hello = {"type": "hello", "name": "rss", "version": "1", "personality": "APP", "group": 1, "key": key}
    hello["created"] = "2026-01-01T00:00:00.000Z"
    rss_before = status_kb(monitor.pid, "VmRSS:")
    async with contextlib.AsyncExitStack() as sessions:
        for n in range(apps):
            origin = time.strftime("%Y%m%d") + f"{n:032x}"
            ws = await sessions.enter_async_context(connect(f"ws://127.0.0.1:{port}/ws/presence/{origin}"))
            await ws.send(json.dumps(hello))
            answer = json.loads(await ws.recv())
            if answer.get("type") != "ready":
                raise RuntimeError(f"the monitor refused a presence session: {answer}")
        await asyncio.sleep(1.0)  # let it settle: claims applied, the heartbeat listing them sent
        rss_after = status_kb(monitor.pid, "VmRSS:")
    return round((rss_after - rss_before) / apps, 1)


def run(
    payloads: tuple[int, ...] = PAYLOADS, repeat: int = 3, bootstrap: str | None = None
) -> tuple[list[Figure], dict[str, float]]:
    """For each payload, `repeat` runs of the floor and of the mesh, taken in turns; medians compared.

    Two cores carry the caller, the echo app and the broker, and one run's req/s at 64 in flight can differ
    from the next by a third for the floor and the mesh alike, so a single pair of runs decides little.
    """
    figures: list[Figure] = []
    for size in payloads:
        floors: list[Figure] = []
        segment_floors: list[Figure] = []  # the broker's own figure for meshkit's records (SEGMENTS)
        meshes: list[Figure] = []
        stalled_lost = 0
        for n in range(repeat):
            floors.append(floor_figure(bootstrap, size))
            if segmented(size):
                segment_floors.append(floor_figure(bootstrap, size, DEFAULT_SEGMENT_SIZE))
            try:
                meshes.append(run_async(mesh_figure(size, bootstrap)))
            except MeshStalled as stall:
                stalled_lost += stall.lost
                print(f"mesh at {size} B, run {n + 1} of {repeat}: {stall}; run left out", file=sys.stderr)
        floor = median_of(floors)
        figures.append(floor)
        segments = median_of(segment_floors).against(floor) if segment_floors else None
        if segments is not None:
            figures.append(segments)
        if meshes:
            figure = median_of(meshes).against(floor)
            figure.lost = (figure.lost or 0) + stalled_lost
            figures.append(figure)
            if segments is not None:  # the same mesh figure against the broker's cost of its records
                figures.append(dataclasses.replace(figure, name=MESH_VS_SEGMENTS).against(segments))
    return figures, run_async(membership_times(bootstrap))
