"""Soak: mesh requests across two instances of an echo app while one is killed and restarted every 10 s.

    python -m bench.soak [--requests 100000] [--kill-every 10] [--json]

Reports completed, errored (by kind) and hung requests (a request is hung if it has no answer 5 s after its
own timeout: must be 0), the p99 of completed ones, and the RSS of the caller and the monitor at start and
end. Not part of `make test`: it runs for minutes. Tansu's memory log slows as partitions grow, so long runs
are bound by the development broker; say so when quoting figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench.mesh import _process, _until, mesh_settings
from meshkit import AppConfig, AppError, Platform, PostOffice
from meshkit.devbroker import DevBroker, free_port
from meshkit.mesh import join_mesh

TIMEOUT = 5.0
HUNG_GRACE = 5.0


def _rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def soak(requests: int, kill_every: float, in_flight: int) -> dict[str, Any]:
    with DevBroker() as broker:
        monitor_port = free_port()
        common = mesh_settings(broker, monitor_port)
        app = {"cloud.connector": "kafka", **common}
        with (
            _process("presence_server.main:app", monitor_port, common) as monitor,
            contextlib.ExitStack() as apps,
        ):
            instances: list[subprocess.Popen[bytes]] = [
                apps.enter_context(_process("bench.echo_app:app", free_port(), app)) for _ in range(2)
            ]
            platform = Platform(AppConfig.load(argv=[], environ={}, overrides=app), name="soak", functions=[])
            await platform.start()
            try:
                await join_mesh(platform, "kafka")
                po = PostOffice(platform)
                await _until(lambda: len(po.search("bench.echo")) == 2, 30.0)
                return await _run(po, requests, kill_every, in_flight, instances, apps, app, monitor.pid)
            finally:
                await platform.stop()


async def _run(
    po: PostOffice,
    requests: int,
    kill_every: float,
    in_flight: int,
    instances: list[subprocess.Popen[bytes]],
    apps: contextlib.ExitStack,
    app: dict[str, str],
    monitor_pid: int,
) -> dict[str, Any]:
    outcomes: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    remaining = requests
    start_rss = {"caller_mb": round(_rss_mb(), 1), "monitor_mb": round(_rss_mb(monitor_pid), 1)}
    payload = os.urandom(200)

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
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
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    for task in helpers:
        task.cancel()
    elapsed = time.perf_counter() - began
    latencies.sort()
    errored = {k: v for k, v in outcomes.items() if k.startswith("error")}
    return {
        "name": "mesh soak",
        "requests": requests,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--kill-every", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args.requests, args.kill_every, args.in_flight))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if result["hung"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
