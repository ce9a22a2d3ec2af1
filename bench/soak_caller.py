"""The callers of `python -m bench.soak --partitions`: a process of their own, inside the callers' namespace.

    python -m bench.soak_caller --bootstrap 10.A.B.1:9092 --presence ws://...,ws://... --requests N [...]

The bench's CallerPool (bench/soak.py) in this process: `--callers` apps, each replaced by a fresh one after
`--retire-after` requests (Tansu's partitions slow past a few thousand record batches). Lines of JSON on
stdout tell the bench that started it where the run is: {"ready": ...} once every caller app sees both echo
instances, {"warm": N} after the first N answered requests (the bench reads the RSS of this process and the
monitors then), {"progress": ...} every 5 s, {"result": ...} at the end. Then it waits for stdin to close
before its apps leave the mesh, so that the RSS at the end is read while they still run.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import heapq
import json
import logging
import os
import sys
import time
from typing import Any

from bench.mesh import _until
from bench.soak import HUNG_GRACE, TIMEOUT, CallerPool
from meshkit import AppConfig, AppError

SAMPLES = 3  # error texts kept per kind, to say what failed


def say(**line: Any) -> None:
    print(json.dumps(line), flush=True)


def _shape(text: str) -> str:
    """An error's text with origins taken out, so that equal failures read alike."""
    return " ".join("<origin>" if len(w.strip("(),.")) == 40 else w for w in text.split())[:200]


class Outcomes:
    """What the requests ended with: completed (and their latency), errors by kind, hung."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.samples: dict[str, list[str]] = {}
        self.failures: list[tuple[float, str]] = []  # (monotonic time it ended, kind): the bench places them
        # 8 bytes each, not a float object and a pointer: the RSS measured is the callers', not this list's
        self.latencies = array.array("d")

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] += 1
        self.failures.append((round(time.monotonic(), 3), kind))
        kept = self.samples.setdefault(kind, [])
        if len(kept) < SAMPLES and _shape(text) not in kept:
            kept.append(_shape(text))

    @property
    def answered(self) -> int:
        return self.counts["completed"] + sum(self.errors.values())


async def run(
    pool: CallerPool, requests: int, in_flight: int, warmup: int, rate: float = 0.0
) -> dict[str, Any]:
    outcomes = Outcomes()
    remaining = requests
    payload = os.urandom(200)
    warmed = asyncio.Event()

    async def caller(slot: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            if rate > 0:  # paced: the n-th request not before n / rate seconds into the run
                await asyncio.sleep(began + (requests - remaining) / rate - time.perf_counter())
            po = pool.office(slot)
            started = time.perf_counter()
            try:
                reply = await asyncio.wait_for(
                    po.request("bench.echo", payload, timeout=TIMEOUT), TIMEOUT + HUNG_GRACE
                )
            except TimeoutError as exc:
                if "timeout for" in str(exc):  # the request's own timeout: a 408
                    outcomes.error("408", str(exc))
                else:  # no answer HUNG_GRACE after its own timeout
                    outcomes.counts["hung"] += 1
                    outcomes.failures.append((round(time.monotonic(), 3), "hung"))
            except AppError as exc:
                outcomes.error(str(exc.status), str(exc))
            except Exception as exc:  # anything else is counted too, and the soak goes on
                outcomes.error(type(exc).__name__, str(exc))
            else:
                if reply.status == 200:
                    outcomes.counts["completed"] += 1
                    outcomes.latencies.append(time.perf_counter() - started)
                else:
                    outcomes.error(str(reply.status), str(reply.body))
            if not warmed.is_set() and outcomes.answered >= warmup:
                warmed.set()
                say(warm=outcomes.answered)

    async def progress() -> None:
        while True:
            await asyncio.sleep(5)
            counts = {**outcomes.counts, **outcomes.errors, "replaced": pool.replaced}
            say(progress=counts, answered=outcomes.answered + outcomes.counts["hung"])

    began = time.perf_counter()
    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(caller(n % pool.count) for n in range(in_flight)))
    finally:
        reporter.cancel()
    latencies = outcomes.latencies
    # the p99 from the top 1% only: a sorted copy of every latency would be in the end RSS
    top = heapq.nlargest(len(latencies) - max(0, int(len(latencies) * 0.99) - 1), latencies)
    return {
        "seconds": round(time.perf_counter() - began, 1),
        "completed": outcomes.counts["completed"],
        "errors": dict(outcomes.errors),
        "error_samples": outcomes.samples,
        "hung": outcomes.counts["hung"],
        "p99_ms": round(top[-1] * 1000, 2) if top else None,
        "callers": pool.count,
        "callers_replaced": pool.replaced,
        "caller_replacements_failed": pool.failed_replacements,
        "failures": outcomes.failures,
    }


async def main_async(args: argparse.Namespace) -> None:
    app = {
        "cloud.connector": "kafka",
        "bootstrap.servers": args.bootstrap,
        "presence.url": args.presence,
        "connector.watchdog.exit.after": "0",  # a benchmark measures; it must not end itself in a cut
    }
    if args.fetch_wait_ms is not None:
        app["fetch.wait.max.ms"] = str(args.fetch_wait_ms)
    pool = CallerPool(AppConfig.load(argv=[], environ={}, overrides=app), args.callers, args.retire_after)
    try:
        await pool.start()
        for po in pool.offices:
            await _until(lambda po=po: len(po.search("bench.echo")) >= 2, 60.0)
        say(ready=pool.count)
        result = await run(pool, args.requests, args.in_flight, args.warmup, args.rate)
        say(result=result)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # the bench reads the RSS
    finally:
        await pool.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_caller", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--presence", required=True, help="the monitors' presence URLs, comma-separated")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--retire-after", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--fetch-wait-ms", type=int)
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second at most (0: unpaced)")
    # times on every line: the bench's timeline and the other processes' logs are read beside this one
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
