"""`python -m bench.scale --apps N[,N...] [--workers 4] [--json]`: the control plane with N apps in one mesh.

Each size gets a fresh Tansu broker and two presence monitors (separate processes, as deployed), then N
simulated apps in `--workers` processes (bench/scale_sim.py: meshkit's own MeshNode and PresenceClient per
app, its own websocket, identity and virtual topic, real records on the broker) join at once. Reported, one
JSON line per size with `--json`:

- `converged_s`: from the first join until every app's routing table holds every other app with its routes;
- `leave_seen_s`: from one app's SIGINT-style leave (drain, then close; `drain.quiet` 0.02 s, as nothing is
  in flight) until no app's routing table holds it;
- `monitor_rss_per_app_kb`: both monitors' peak RSS, less what they used before the apps came, per app;
- `monitor_cpu_s`: both monitors' CPU seconds from the first join until converged (`sims_cpu_s`: the
  simulated apps', which on a machine of few cores bounds `converged_s`: every app takes every other's card);
- `records_per_join`: records written to the broker from the first join until converged, per app (and by
  kind in `records`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from bench.processes import ROOT, served
from meshkit.connectors.kafka import admin_config, consumer_config
from meshkit.devbroker import DevBroker, free_port
from meshkit.mesh import MONITOR_TOPIC, FrameError, parse

PARTITIONS_PER_TOPIC = 32
MONITORS = 2
# Hundreds of simulated apps share one core here, so in a join storm each one's event loop lags by seconds
# (a real app, one per process, takes its group's cards in milliseconds): keep-alives slow enough that this
# lag is not taken for a dead app. The monitors drop an app after SIM_PRESENCE_TIMEOUT s of silence.
SIM_KEEPALIVE = 10.0
SIM_PRESENCE_TIMEOUT = 60.0


@dataclass
class ScaleFigure:
    apps: int
    groups: int
    converged_s: float
    leave_seen_s: float
    monitor_rss_per_app_kb: float
    monitor_cpu_s: float
    records_per_join: float
    sims_cpu_s: float = 0.0  # the simulated apps' processes, from the first join until converged
    workers: int = 0
    monitor_peak_rss_mb: list[float] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)


class BenchError(RuntimeError):
    pass


def virtual_topics_for(apps: int) -> int:
    """max.virtual.topics for a mesh of `apps`: whole physical topics, with one to spare."""
    return (apps // PARTITIONS_PER_TOPIC + 2) * PARTITIONS_PER_TOPIC


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key))


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _monitors(
    bootstrap: str, topics: int, log_path: str, groups: int
) -> Iterator[tuple[list[int], list[str]]]:
    """Two monitors, the second started once the first is up (it syncs from it)."""
    properties = {
        "bootstrap.servers": bootstrap,
        "max.virtual.topics": str(topics),
        "app.partitions.per.topic": str(PARTITIONS_PER_TOPIC),
        "connector.watchdog.exit.after": "0",
        "presence.timeout": str(SIM_PRESENCE_TIMEOUT),
        "max.closed.user.groups": str(max(groups, 10)),
    }
    with contextlib.ExitStack() as stack:
        logs = stack.enter_context(open(log_path, "ab"))
        pids, urls = [], []
        for _ in range(MONITORS):
            port = free_port()
            args = ["meshkit.cli", "run", "presence_server.main:app", "--port", str(port)]
            args += ["--log-level", "warning", *(f"-D{k}={v}" for k, v in properties.items())]
            process = stack.enter_context(served(args, f"http://127.0.0.1:{port}/livenessprobe", logs))
            pids.append(process.pid)
            urls.append(f"ws://127.0.0.1:{port}/ws/presence")
        yield pids, urls


class WorkerProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.origins: list[str] = []
        self.received: list[dict[str, Any]] = []

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next `event` from the worker (events of other kinds that come first are kept for later)."""
        assert self.process.stdout is not None
        for message in self.received:
            if message.get("event") == event:
                self.received.remove(message)
                return message
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise BenchError(f"a worker exited ({await self.process.wait()}) before {event!r}")
                got: dict[str, Any] = json.loads(line)
                if got.get("event") == event:
                    return got
                self.received.append(got)


@contextlib.asynccontextmanager
async def _workers(
    apps: int,
    count: int,
    bootstrap: str,
    urls: list[str],
    topics: int,
    log_path: str,
    names: int,
    groups: int,
) -> AsyncIterator[list[WorkerProcess]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    share, extra = divmod(apps, count)
    workers: list[WorkerProcess] = []
    with open(log_path, "ab") as logs:  # noqa: ASYNC230  # opened once, before anything runs
        first = 0
        for n in range(count):
            size = share + (1 if n < extra else 0)
            args = ["--bootstrap", bootstrap, "--monitors", ",".join(urls), "--apps", str(apps)]
            args += ["--first", str(first), "--count", str(size), "--topics", str(topics)]
            args += ["--keepalive", str(SIM_KEEPALIVE), "--names", str(names), "--groups", str(groups)]
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.scale_sim", *args,
                cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=logs,
            )  # fmt: skip
            workers.append(WorkerProcess(process))
            first += size
        try:
            for worker in workers:
                worker.origins = (await worker.expect("ready", 120))["origins"]
            yield workers
        finally:
            for worker in workers:
                with contextlib.suppress(Exception):
                    await worker.send({"cmd": "stop"})
            for worker in workers:
                try:
                    await asyncio.wait_for(worker.process.wait(), 30)
                except TimeoutError:
                    worker.process.kill()
                    await worker.process.wait()


def count_records(bootstrap: str) -> Counter[str]:
    """Every record on service.monitor and the multiplex topics, by kind (control messages by type), up to
    each partition's end as the broker reported it when the count began."""
    settings = {"bootstrap.servers": bootstrap}
    admin = AdminClient(admin_config(settings))
    topics = admin.list_topics(timeout=10).topics
    partitions = [
        TopicPartition(name, p)
        for name, meta in topics.items()
        if name == MONITOR_TOPIC or name.startswith("multiplex.")
        for p in meta.partitions
    ]
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    asked = admin.list_offsets({tp: latest for tp in partitions}, request_timeout=30)
    # Tansu reports the end as the last batch's base offset + 1: reading that batch reaches the end
    ends = {(tp.topic, tp.partition): future.result().offset - 1 for tp, future in asked.items()}
    left = {key for key, end in ends.items() if end >= 0}
    consumer = Consumer(consumer_config(settings))
    kinds: Counter[str] = Counter()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for topic, p in left])
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=5000, timeout=0.2):
                if message.error() is not None or message.value() is None:
                    continue
                key = (str(message.topic()), int(message.partition() or 0))
                kinds[_kind(*key, bytes(message.value() or b""))] += 1
                if message.offset() >= ends[key]:
                    left.discard(key)
        return kinds
    finally:
        consumer.close()


def _kind(topic: str, partition: int, value: bytes) -> str:
    where = (
        "log" if topic == MONITOR_TOPIC and partition == 0 else "group" if topic == MONITOR_TOPIC else "app"
    )
    try:
        frame = parse(value)
    except FrameError:
        return f"{where}:undecodable"
    payload = frame.get("payload")
    if frame.get("type") == "control" and isinstance(payload, dict):
        return f"{where}:{payload.get('type')}"
    return f"{where}:{frame.get('type')}"


async def measure(apps: int, workers: int, timeout: float, names: int = 50, groups: int = 1) -> ScaleFigure:
    topics = virtual_topics_for(apps)
    log_path = os.path.join(tempfile.gettempdir(), f"bench-scale-{apps}-{os.getpid()}.log")
    monitor_log = log_path.replace(".log", "-monitors.log")
    with DevBroker() as broker, _monitors(broker.bootstrap, topics, monitor_log, groups) as (monitors, urls):
        before_rss = [_status_kb(pid, "VmRSS:") for pid in monitors]
        before_records = await asyncio.to_thread(count_records, broker.bootstrap)
        async with _workers(apps, workers, broker.bootstrap, urls, topics, log_path, names, groups) as procs:
            before_cpu = sum(_cpu_s(pid) for pid in monitors)
            before_sims = sum(_cpu_s(w.process.pid) for w in procs)
            started = time.monotonic()
            for worker in procs:
                await worker.send({"cmd": "join"})
            try:
                converged = [await w.expect("converged", timeout) for w in procs]
            except TimeoutError:
                raise BenchError(f"{apps} apps not converged within {timeout} s (log: {log_path})") from None
            converged_s = max(c["at"] for c in converged) - started
            cpu = sum(_cpu_s(pid) for pid in monitors) - before_cpu
            sims_cpu = sum(_cpu_s(w.process.pid) for w in procs) - before_sims
            peak = [_status_kb(pid, "VmHWM:") for pid in monitors]
            records = await asyncio.to_thread(count_records, broker.bootstrap)
            records.subtract(before_records)
            leaving = procs[0].origins[0]
            for worker in procs:
                await worker.send({"cmd": "watch", "origin": leaving})
            await procs[0].send({"cmd": "leave", "origin": leaving})
            left = await procs[0].expect("left", 30)
            try:
                seen = [await w.expect("gone", 30) for w in procs]
            except TimeoutError:
                raise BenchError(f"a leave not seen by every app within 30 s (log: {log_path})") from None
    joined = {k: v for k, v in sorted(records.items()) if v}
    return ScaleFigure(
        apps=apps,
        groups=groups,
        converged_s=round(converged_s, 2),
        leave_seen_s=round(max(s["at"] for s in seen) - left["at"], 3),
        monitor_rss_per_app_kb=round((sum(peak) - sum(before_rss)) / apps, 1),
        monitor_cpu_s=round(cpu, 2),
        records_per_join=round(sum(joined.values()) / apps, 2),
        sims_cpu_s=round(sims_cpu, 2),
        workers=workers,
        monitor_peak_rss_mb=[round(kb / 1024, 1) for kb in peak],
        records=joined,
    )


COLUMNS = (
    "apps",
    "groups",
    "converged_s",
    "leave_seen_s",
    "monitor_rss_per_app_kb",
    "monitor_cpu_s",
    "records_per_join",
    "sims_cpu_s",
)


def report(figure: ScaleFigure, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(figure)), flush=True)
        return
    values = asdict(figure)
    print("  ".join(f"{c}={values[c]}" for c in COLUMNS), flush=True)
    print(f"    records: {figure.records}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--apps", default="100", help="mesh sizes, a comma list (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="processes the simulated apps run in")
    parser.add_argument("--names", type=int, default=50, help="apps the N instances are of (default 50)")
    parser.add_argument("--groups", type=int, default=1, help="closed user groups they are spread over")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for convergence")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    failed = False
    for apps in (int(a) for a in args.apps.split(",")):
        try:
            run = measure(apps, min(args.workers, apps), args.timeout, args.names, args.groups)
            report(asyncio.run(run), args.json)
        except BenchError as exc:
            print(f"bench.scale with {apps} apps: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
