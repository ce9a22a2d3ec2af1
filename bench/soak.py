"""Soak: mesh requests across two instances of an echo app while one is killed and restarted every 10 s.

    python -m bench.soak [--requests 100000] [--kill-every 10] [--callers 16] [--bootstrap HOST:PORT] [--json]

Reports completed, errored (by kind) and hung requests (a request is hung if it has no answer 5 s after its
own timeout: must be 0), the p99 of completed ones, and the RSS of the caller and the monitor at start and
end. Not part of `make test`: it runs for minutes.

The requests come from `--callers` apps in this process, each with its own virtual topic. Tansu's memory
storage stalls a partition past about 5,000 record batches (`python -m bench.broker_growth`), so on the
development broker a caller is replaced by a fresh app (a fresh virtual topic) after `--retire-after`
requests, and the killed instance alternates (a restarted one gets a never-used topic too): no partition
grows past what Tansu holds. Against a real cluster (`--bootstrap`) one caller, never replaced, does.

With `--partitions` (bench/soak_partitions.py; root, ip and nft, else exit 2) every process runs in a network
namespace of its own, the callers in one process in the callers' namespace, and every `--partition-every`
seconds one link fault is applied for `--partition-for` seconds and healed, in turn: an echo instance cut
from the broker, an echo instance cut from its monitor, the broker's packets to the callers lost (one way),
a monitor cut from the other (split brain). Kills go on between the faults. Its RSS figures are taken after
a warm-up of `--warmup` requests (a quarter of the run by default, at most 25,000) and at the end.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench.mesh import _process, _until, mesh_settings, status_kb
from meshkit import AppConfig, AppError, Platform, PostOffice
from meshkit.connectors import make_connector
from meshkit.devbroker import DevBroker, free_port
from meshkit.mesh import join_mesh

TIMEOUT = 5.0
HUNG_GRACE = 5.0
FAULTS = ("callee-broker", "callee-monitor", "broker-caller", "split-brain")  # bench/soak_net.py says what
RETRY_REPLACE_AFTER = 5.0  # seconds before a slot whose fresh app failed to join tries again


def _rss_mb(pid: int | None = None) -> float:
    return status_kb(pid or os.getpid(), "VmRSS:") / 1024


class CallerPool:
    """The soak's calling apps, in this process; one is replaced by a fresh app after `retire_after`
    requests (the old one leaves the mesh once its requests in flight have ended)."""

    def __init__(self, config: AppConfig, count: int, retire_after: int | None) -> None:
        self.config = config
        self.count = count
        self.retire_after = retire_after
        self.offices: list[PostOffice] = []
        self.issued: list[int] = []
        self.replaced = 0
        self.failed_replacements = 0
        self._names = itertools.count()
        self._replacing: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._platforms: list[Platform] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def _new(self) -> PostOffice:
        platform = Platform(self.config, name=f"soak-{next(self._names)}", functions=[])
        self._platforms.append(platform)
        try:
            await platform.start()
            await join_mesh(platform, make_connector(self.config))
            po = PostOffice(platform)
            await _until(lambda: len(po.search("bench.echo")) >= 1, 30.0)
        except BaseException:  # a half-joined app must not stay running (and hold memory) to the end
            await self._drop(platform)
            raise
        return po

    async def _drop(self, platform: Platform) -> None:
        with contextlib.suppress(Exception):
            await platform.stop()
        with contextlib.suppress(ValueError):
            self._platforms.remove(platform)  # a stopped app kept in the list would read as caller growth

    async def start(self) -> None:
        for _ in range(self.count):
            self.offices.append(await self._new())
            self.issued.append(0)

    def office(self, slot: int) -> PostOffice:
        """The app slot `slot` sends its next request from."""
        self.issued[slot] += 1
        if (
            self.retire_after
            and self.issued[slot] >= self.retire_after
            and slot not in self._replacing
            and time.monotonic() >= self._retry_at.get(slot, 0.0)
        ):
            self._replacing.add(slot)
            task = asyncio.create_task(self._replace(slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self.offices[slot]

    async def _replace(self, slot: int) -> None:
        try:
            fresh = await self._new()
        except Exception:  # the mesh out of reach (a partition): the slot tries again in a while
            self._replacing.discard(slot)
            self._retry_at[slot] = time.monotonic() + RETRY_REPLACE_AFTER
            self.failed_replacements += 1
            return
        retired, self.offices[slot] = self.offices[slot], fresh
        self.issued[slot] = 0
        self._replacing.discard(slot)
        self.replaced += 1
        await asyncio.sleep(TIMEOUT + HUNG_GRACE)  # what it still awaits ends first
        await self._drop(retired.platform)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for platform in self._platforms:
            with contextlib.suppress(Exception):
                await platform.stop()


async def soak(
    requests: int,
    kill_every: float,
    in_flight: int,
    callers: int,
    bootstrap: str | None,
    fetch_wait_ms: int | None = None,
    retire_after: int | None = None,
) -> dict[str, Any]:
    with contextlib.nullcontext(None) if bootstrap else DevBroker() as broker:
        monitor_port = free_port()
        common = mesh_settings(broker.bootstrap if broker else str(bootstrap), monitor_port)
        if fetch_wait_ms is not None:  # every process: fewer, fuller fetches (and record batches) for Tansu
            common["fetch.wait.max.ms"] = str(fetch_wait_ms)
        app = {"cloud.connector": "kafka", **common}
        with (
            _process("presence_server.main:app", monitor_port, common) as monitor,
            contextlib.ExitStack() as apps,
        ):
            instances: list[subprocess.Popen[bytes]] = [
                apps.enter_context(_process("bench.echo_app:app", free_port(), app)) for _ in range(2)
            ]
            pool = CallerPool(AppConfig.load(argv=[], environ={}, overrides=app), callers, retire_after)
            try:
                await pool.start()
                for po in pool.offices:
                    await _until(lambda po=po: len(po.search("bench.echo")) == 2, 30.0)
                return await _run(pool, requests, kill_every, in_flight, instances, apps, app, monitor.pid)
            finally:
                await pool.stop()


async def _run(
    pool: CallerPool,
    requests: int,
    kill_every: float,
    in_flight: int,
    instances: list[subprocess.Popen[bytes]],
    apps: contextlib.ExitStack,
    app: dict[str, str],
    monitor_pid: int,
) -> dict[str, Any]:
    outcomes: collections.Counter[str] = collections.Counter()
    latencies = array.array("d")  # 8 bytes a request: the RSS measured is the caller's, not this list's
    remaining = requests
    start_rss = {"caller_mb": round(_rss_mb(), 1), "monitor_mb": round(_rss_mb(monitor_pid), 1)}
    payload = os.urandom(200)

    async def caller(slot: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            po = pool.office(slot)
            started = time.perf_counter()
            try:
                reply = await asyncio.wait_for(
                    po.request("bench.echo", payload, timeout=TIMEOUT), TIMEOUT + HUNG_GRACE
                )
            except TimeoutError as exc:
                outcomes["hung" if "timeout for" not in str(exc) else "error: timeout"] += 1
            except AppError as exc:
                outcomes[f"error: {exc.status}"] += 1
            else:
                if reply.status == 200:
                    outcomes["completed"] += 1
                    latencies.append(time.perf_counter() - started)
                else:
                    outcomes[f"error: reply {reply.status}"] += 1

    async def killer() -> None:
        victim = 0
        while True:
            await asyncio.sleep(kill_every)
            instances[victim].send_signal(signal.SIGKILL)
            outcomes["kills"] += 1
            loop = asyncio.get_running_loop()
            instances[victim] = await loop.run_in_executor(
                None, lambda: apps.enter_context(_process("bench.echo_app:app", free_port(), app))
            )
            victim = 1 - victim

    async def progress() -> None:
        while True:
            await asyncio.sleep(5)
            print(f"  {time.perf_counter() - began:6.0f} s  {dict(outcomes)}", file=sys.stderr, flush=True)

    began = time.perf_counter()
    helpers = [asyncio.create_task(killer()), asyncio.create_task(progress())]
    interrupted = False
    try:
        await asyncio.gather(*(caller(n % pool.count) for n in range(in_flight)))
    except asyncio.CancelledError:  # Ctrl-C: a long run still reports what it saw
        interrupted = True
    for task in helpers:
        task.cancel()
    elapsed = time.perf_counter() - began
    latencies = array.array("d", sorted(latencies))
    errored = {k: v for k, v in outcomes.items() if k.startswith("error")}
    result = {
        "name": "mesh soak",
        "requests": requests,
        "interrupted": interrupted,
        "callers": pool.count,
        "callers_replaced": pool.replaced,
        "seconds": round(elapsed, 1),
        "completed": outcomes["completed"],
        "errored": sum(errored.values()),
        "errors": errored,
        "hung": outcomes["hung"],
        "kills": outcomes["kills"],
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2) if latencies else None,
        "rss_start": start_rss,
        "rss_end": {"caller_mb": round(_rss_mb(), 1), "monitor_mb": round(_rss_mb(monitor_pid), 1)},
    }
    if interrupted:
        print(json.dumps(result, indent=2), flush=True)
        raise asyncio.CancelledError
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--kill-every", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--callers", type=int, default=None, help="default: 8 on Tansu, 1 with --bootstrap")
    parser.add_argument(
        "--retire-after",
        type=int,
        default=None,
        help="requests per caller app (default: 2000 on Tansu, never)",
    )
    parser.add_argument("--bootstrap", help="a Kafka cluster to use instead of a fresh Tansu broker")
    parser.add_argument("--fetch-wait-ms", type=int, help="fetch.wait.max.ms for every process (default 2)")
    parser.add_argument("--json", action="store_true")
    parted = parser.add_argument_group("partitions (bench/soak_partitions.py; root, ip and nft)")
    parted.add_argument("--partitions", action="store_true", help="every process in a network namespace")
    parted.add_argument("--partition-every", type=float, default=15.0, help="seconds between faults")
    parted.add_argument("--partition-for", type=float, default=6.0, help="seconds a fault lasts")
    parted.add_argument("--faults", default=",".join(FAULTS), help="which, in turn (comma-separated)")
    parted.add_argument("--warmup", type=int, help="requests before the start RSS (default: a tenth)")
    parted.add_argument("--rate", type=float, default=0.0, help="requests per second at most (0: unpaced)")
    args = parser.parse_args(argv)
    callers = args.callers or (1 if args.bootstrap else 8)
    retire_after = args.retire_after or (None if args.bootstrap else 2000)
    if args.partitions:
        return _partitions(args, callers, retire_after or 2000)
    result = asyncio.run(
        soak(
            args.requests,
            args.kill_every,
            args.in_flight,
            callers,
            args.bootstrap,
            args.fetch_wait_ms,
            retire_after,
        )
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if result["hung"] == 0 else 1


def _partitions(args: argparse.Namespace, callers: int, retire_after: int) -> int:
    from bench.soak_partitions import Unavailable, soak_partitions  # the namespaces' machinery only here

    if args.bootstrap:
        print(
            "bench.soak: --partitions starts its own broker in a namespace; no --bootstrap", file=sys.stderr
        )
        return 2
    faults = [f for f in args.faults.split(",") if f]
    if not set(faults) <= set(FAULTS):
        print(f"bench.soak: --faults takes {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    try:
        result = soak_partitions(
            args.requests,
            kill_every=args.kill_every,
            partition_every=args.partition_every,
            partition_for=args.partition_for,
            faults=faults,
            in_flight=args.in_flight,
            callers=callers,
            retire_after=retire_after,
            warmup=args.warmup,
            fetch_wait_ms=args.fetch_wait_ms,
            rate=args.rate,
        )
    except Unavailable as exc:
        print(f"bench.soak --partitions: network namespaces unavailable: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    answered = result["completed"] + result["errored"] + result["hung"]
    return 0 if result["hung"] == 0 and result["rss_flat"] and answered == result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
