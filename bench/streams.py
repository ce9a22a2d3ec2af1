"""Streams: segments per second for 200 B segments, over the mesh and over HTTP, each beside its floor.

- mesh floor: bare confluent-kafka with the connector's client settings (`producer_config` /
  `consumer_config`): a producer process produces N records of 200 B to one partition of a fresh topic, and
  a consumer here reads them from it; segments/s from the first produce to the last record read. Also
  reported: the record batches the producer sent in each run (librdkafka's count of Produce requests: one
  partition, one batch each; the fewer, the quicker: a run whose first acks are slow grows its batches and
  may go several times quicker than the next, so the floor's runs spread widely), and the broker's and the
  two clients' CPU over the run, in cores: the broker half a core or more and busier than both clients
  together, the floor is Tansu's limit, and the row's note says so.
- mesh figure: bench/stream_app.py's `bench.segments` in its own process, joined with a platform here
  through a presence monitor; `PostOffice.stream` here reads N segments of 200 B, from the call to the eof.
- http floor: a bare Starlette `StreamingResponse` (text/event-stream, M frames `data: <200 B>\\n\\n`)
  under one uvicorn worker (uvloop, httptools), read by a bare aiohttp client counting frames.
- http figure: bench/stream_app.py under `meshkit run`, read with `PostOffice.stream(endpoint=...)`
  (Event over HTTP) from a platform here, M segments.

N is 20,000 (`--segments`), M 100,000 (`--http-segments`): 20,000 frames take the http floor under 0.1 s.

Every mesh phase gets a fresh Tansu broker (its memory log slows past about 4,000 record batches a
partition) unless `--bootstrap` names a cluster. The http floor and the figures read a short warm-up stream
first; the mesh floor's clients are connected before its first produce. `--repeat` runs of each pair, taken
in turns; the medians are compared. A failed run is said on stderr and left out.

    python -m bench.streams [--json] [--repeat 3] [--segments N] [--http-segments M] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import WARM_UP, run_async
from bench.kafka_floor import _create_topic, _produce
from bench.mesh import _process, _until, mesh_settings
from bench.processes import ROOT, served
from meshkit import AppConfig, Platform, PostOffice
from meshkit.connectors import make_connector
from meshkit.connectors.kafka import consumer_config, producer_config
from meshkit.devbroker import DevBroker, free_port
from meshkit.http import equip
from meshkit.mesh import join_mesh

SEGMENTS = 20_000  # a mesh stream: well under Tansu's slowdown (the floor sends about 600-1,600 batches)
HTTP_SEGMENTS = 100_000  # an http stream: 20,000 frames are too short a run (under 0.1 s) to be steady
SIZE = 200
ROUTE = "bench.segments"
READ_TIMEOUT = 60.0  # seconds for one stream of N segments, a failed run past it
BROKER_BOUND = 0.5  # the broker this many cores busy or more, and busier than both clients: Tansu's limit


@dataclass
class StreamFigure:
    """One row: BENCH.md's shape, segments/s in place of latency and req/s."""

    name: str
    payload_bytes: int
    segments: int
    segments_per_s: float
    floor: str | None = None
    ratio: float | None = None
    runs: int = 1
    per_run: list[float] = field(default_factory=list)  # segments/s of each run, in order
    batches: list[int] | None = None  # mesh floor: the record batches produced in each run
    broker_cores: float | None = None  # mesh rows: the broker's CPU over the run / its wall time (median)
    client_cores: float | None = None  # mesh floor: its producer's and consumer's CPU / wall time (median)
    note: str | None = None


def _run(count: int, seconds: float, **figures: Any) -> StreamFigure:
    """One run: `count` segments in `seconds` (its row's name is given when the runs are summed up)."""
    return StreamFigure("", SIZE, count, count / seconds, **figures)


@contextlib.contextmanager
def _broker(bootstrap: str | None) -> Iterator[tuple[str, int | None]]:
    """(bootstrap, Tansu's pid): a fresh Tansu, or the cluster given (pid None)."""
    if bootstrap is not None:
        yield bootstrap, None
        return
    with DevBroker() as broker:
        yield broker.bootstrap, broker._proc.pid if broker._proc else None


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class _CpuWatch:
    def __init__(self, pid: int | None) -> None:
        self.pid, self.cpu, self.wall = pid, _cpu_s(pid), time.monotonic()

    def cores(self) -> float | None:
        if self.pid is None:
            return None
        return round((_cpu_s(self.pid) - self.cpu) / (time.monotonic() - self.wall), 2)


def produce(bootstrap: str, topic: str, count: int) -> None:
    """The floor's producer process: on "go" (stdin), `count` records to partition 0; then one JSON line."""
    requests = {"Produce": 0}

    def on_stats(raw: str) -> None:
        brokers = json.loads(raw)["brokers"].values()
        requests["Produce"] = sum(b["req"].get("Produce", 0) for b in brokers)

    settings = {"bootstrap.servers": bootstrap}
    conf = {**producer_config(settings), "statistics.interval.ms": 500, "stats_cb": on_stats}
    producer = Producer(conf)
    producer.list_topics(topic, timeout=10)  # connected, metadata known
    print("ready", flush=True)
    sys.stdin.readline()
    value = b"x" * SIZE
    cpu = time.process_time()
    started = time.monotonic()
    for _ in range(count):
        _produce(producer, topic, 0, value)
        producer.poll(0)
    if producer.flush(30) != 0:
        raise RuntimeError("records not delivered within 30 s")
    cpu = time.process_time() - cpu
    time.sleep(0.6)  # one more statistics interval: the last Produce requests counted
    producer.poll(0)
    print(json.dumps({"started": started, "batches": requests["Produce"], "cpu": cpu}), flush=True)


def mesh_floor(count: int, bootstrap: str | None) -> StreamFigure:
    with _broker(bootstrap) as (servers, pid):
        topic = _create_topic(servers)
        consumer = Consumer(consumer_config({"bootstrap.servers": servers}))
        consumer.assign([TopicPartition(topic, 0, 0)])  # a fresh topic: offset 0 is its end
        args = [sys.executable, "-m", "bench.streams", "--produce", servers, topic, str(count)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        producer = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert producer.stdin is not None and producer.stdout is not None
            if producer.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"the floor's producer failed to start (exit code {producer.wait()})")
            consumer.consume(num_messages=1, timeout=0.5)  # fetching at the partition's end
            watch, cpu = _CpuWatch(pid), time.process_time()
            producer.stdin.write(b"go\n")
            producer.stdin.flush()
            got, deadline = 0, time.monotonic() + READ_TIMEOUT
            while got < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{got} of {count} records read in {READ_TIMEOUT} s")
                got += sum(1 for m in consumer.consume(num_messages=500, timeout=0.1) if m.error() is None)
            done, cpu = time.monotonic(), time.process_time() - cpu
            cores = watch.cores()
            report = json.loads(producer.stdout.readline())
            client_cores = round((cpu + report["cpu"]) / (done - watch.wall), 2)
            figures = {"batches": [report["batches"]], "broker_cores": cores, "client_cores": client_cores}
            return _run(count, done - report["started"], **figures)
        finally:
            consumer.close()
            producer.kill()
            producer.wait()


async def _read(po: PostOffice, count: int, **where: Any) -> None:
    """One stream of `count` segments of SIZE, to its eof; anything else raises."""
    got = 0
    async for segment in po.stream(ROUTE, {"count": count, "size": SIZE}, timeout=10.0, **where):
        kind = segment.headers.get("x-event-stream")
        if kind != "data":
            if kind != "eof":
                raise RuntimeError(f"{ROUTE} ended with {kind} ({segment.status}): {segment.body!r}")
            break
        if len(segment.body) != SIZE:
            raise RuntimeError(f"a segment of {len(segment.body)} B, not {SIZE}")
        got += 1
    if got != count:
        raise RuntimeError(f"{ROUTE} gave {got} segments of {count}")


async def _timed(po: PostOffice, count: int, pid: int | None = None, **where: Any) -> StreamFigure:
    await _read(po, WARM_UP, **where)
    watch = _CpuWatch(pid)
    await _read(po, count, **where)
    return _run(count, time.monotonic() - watch.wall, broker_cores=watch.cores())


@contextlib.asynccontextmanager
async def _caller(overrides: dict[str, str], mesh: bool) -> AsyncIterator[PostOffice]:
    config = AppConfig.load(argv=[], environ={}, overrides=overrides)
    platform = Platform(config, name="bench-stream-caller", functions=[])
    if not mesh:
        equip(platform)  # the Event-over-HTTP client, as in an app
    await platform.start()
    try:
        if mesh:
            await join_mesh(platform, make_connector(config))
        yield PostOffice(platform)
    finally:
        await platform.stop()


async def _mesh_read(common: dict[str, str], count: int, pid: int | None) -> StreamFigure:
    async with _caller(common, mesh=True) as po:
        await _until(lambda: po.exists(ROUTE), 20.0)
        return await _timed(po, count, pid)


def mesh_figure(count: int, bootstrap: str | None) -> StreamFigure:
    # processes started outside the loop: a Ctrl-C while they start is a KeyboardInterrupt at once
    with _broker(bootstrap) as (servers, pid):
        monitor_port = free_port()
        common = {"cloud.connector": "kafka", **mesh_settings(servers, monitor_port)}
        with (
            _process("presence_server.main:app", monitor_port, common),
            _process("bench.stream_app:app", free_port(), common),
        ):
            return run_async(_mesh_read(common, count, pid))


def floor_app() -> Any:
    """The http floor's server: `uvicorn --factory bench.streams:floor_app`; GET /segments?count=N"""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def segments(request: Request) -> StreamingResponse:
        frame = b"data: " + b"x" * SIZE + b"\n\n"
        count = int(request.query_params["count"])

        async def frames() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield frame

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(routes=[Route("/segments", segments)])


async def _read_sse(session: aiohttp.ClientSession, url: str, count: int) -> None:
    got, rest = 0, b""
    async with session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"the http floor answered {response.status}")
        async for chunk in response.content.iter_any():
            frames = (rest + chunk).split(b"\n\n")
            got, rest = got + len(frames) - 1, frames[-1]
    if got != count or rest:
        raise RuntimeError(f"the http floor gave {got} frames of {count}")


async def _http_floor_read(base: str, count: int) -> StreamFigure:
    async with aiohttp.ClientSession() as session:
        await _read_sse(session, f"{base}/segments?count={WARM_UP}", WARM_UP)
        started = time.monotonic()
        await _read_sse(session, f"{base}/segments?count={count}", count)
        return _run(count, time.monotonic() - started)


def http_floor(count: int) -> StreamFigure:
    port = free_port()
    args = ["uvicorn", "--factory", "bench.streams:floor_app", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", "1", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with served([*args, "--no-access-log"], f"{base}/segments?count=0"):
        return run_async(_http_floor_read(base, count))


async def _http_figure_read(url: str, count: int) -> StreamFigure:
    async with _caller({}, mesh=False) as po:
        return await _timed(po, count, endpoint=url)


def http_figure(count: int) -> StreamFigure:
    port = free_port()
    args = ["meshkit.cli", "run", "bench.stream_app:app", "--port", str(port), "--log-level", "warning"]
    with served([*args, "-Dcloud.connector=none"], f"http://127.0.0.1:{port}/livenessprobe"):
        return run_async(_http_figure_read(f"http://127.0.0.1:{port}/api/event", count))


def _row(name: str, runs: list[StreamFigure]) -> StreamFigure:
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    batches = [n for r in runs for n in r.batches or []]
    return StreamFigure(
        name=name,
        payload_bytes=SIZE,
        segments=runs[0].segments,
        segments_per_s=round(statistics.median(r.segments_per_s for r in runs), 1),
        runs=len(runs),
        per_run=[round(r.segments_per_s, 1) for r in runs],
        batches=batches or None,
        broker_cores=median([r.broker_cores for r in runs]),
        client_cores=median([r.client_cores for r in runs]),
    )


def run(
    repeat: int = 3, bootstrap: str | None = None, count: int = SEGMENTS, http_count: int = HTTP_SEGMENTS
) -> list[StreamFigure]:
    """`repeat` runs of each floor and its figure, in turns; the figures' medians against the floors'."""
    pairs: list[tuple[str, Callable[[], StreamFigure], str, Callable[[], StreamFigure]]] = [
        (
            "mesh stream floor (confluent-kafka)",
            lambda: mesh_floor(count, bootstrap),
            "mesh PostOffice.stream",
            lambda: mesh_figure(count, bootstrap),
        ),
        (
            "http stream floor (aiohttp, SSE)",
            lambda: http_floor(http_count),
            "http PostOffice.stream",
            lambda: http_figure(http_count),
        ),
    ]
    rows: list[StreamFigure] = []
    for floor_name, floor_run, name, figure_run in pairs:
        results: dict[str, list[StreamFigure]] = {floor_name: [], name: []}
        for n in range(repeat):
            for label, measured in ((floor_name, floor_run), (name, figure_run)):
                try:
                    results[label].append(measured())
                except Exception as exc:  # said, left out; the other runs still count
                    print(f"{label}, run {n + 1} of {repeat} failed: {exc!r}", file=sys.stderr)
        floor = _row(floor_name, results[floor_name]) if results[floor_name] else None
        if floor is not None:
            cores, clients = floor.broker_cores or 0.0, floor.client_cores or 0.0
            if cores >= BROKER_BOUND and clients < cores:
                floor.note = f"Tansu's limit: the broker busy {cores} cores, the clients {clients}"
            rows.append(floor)
        if results[name]:
            figure = _row(name, results[name])
            if floor is not None:
                figure.floor = floor.name
                figure.ratio = round(figure.segments_per_s / floor.segments_per_s, 3)
            rows.append(figure)
    return rows


def report(rows: list[StreamFigure], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(asdict(row)), flush=True)
        return
    print(f"{'name':<36} {'payload':>8} {'segments':>9} {'segments/s':>11} {'x floor':>8}  runs: segments/s")
    for r in rows:
        ratio = f"{r.ratio:>8.2f}" if r.ratio is not None else f"{'floor' if 'floor' in r.name else '-':>8}"
        extra = "".join(
            [
                f"  batches {', '.join(map(str, r.batches))}" if r.batches else "",
                f"  broker {r.broker_cores} cores" if r.broker_cores is not None else "",
                f"  clients {r.client_cores} cores" if r.client_cores is not None else "",
                f"  ({r.note})" if r.note else "",
            ]
        )
        runs = ", ".join(f"{v:.0f}" for v in r.per_run)
        figures = f"{r.payload_bytes:>8} {r.segments:>9} {r.segments_per_s:>11.0f} {ratio}"
        print(f"{r.name:<36} {figures}  {runs}{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line (BENCH.md)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure and its floor (medians)")
    parser.add_argument("--segments", type=int, default=SEGMENTS, help="segments in a measured mesh stream")
    parser.add_argument("--http-segments", type=int, default=HTTP_SEGMENTS, help="segments in an http one")
    parser.add_argument("--bootstrap", help="the mesh rows on this Kafka cluster, not fresh Tansu brokers")
    parser.add_argument("--produce", nargs=3, help=argparse.SUPPRESS)  # the floor's producer process
    args = parser.parse_args(argv)
    if args.produce:
        bootstrap, topic, count = args.produce
        produce(bootstrap, topic, int(count))
        return 0
    rows = run(args.repeat, args.bootstrap, args.segments, args.http_segments)
    report(rows, args.json)
    return 0 if len(rows) == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
