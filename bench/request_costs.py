"""Where an in-process request's time goes: the parts of `PostOffice.request` timed one by one, beside the
time per request of the floors (BENCH.md's in-process floors) and of meshkit (1 / req/s at 64 in flight).

The floors hand a bare `(body, future)` pair to a worker task. A meshkit request also builds its event and
its reply (`EventEnvelope`, with an event id each), finds the route's pool, holds an instance, checks the
deadline, counts the execution for `/metrics`, and, when the handler awaits, registers a correlation id for
its reply and its caller's deadline. The rows below say what each part costs on this loop, so that a ratio
against the floors can be read as the sum it is.

    python -m bench.request_costs [--loop uvloop|asyncio] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from bench import inprocess
from bench.common import LOOPS, run_async, use_loop
from meshkit import AppConfig, EventEnvelope, FunctionRegistry, Platform, PostOffice
from meshkit.core import new_event_id

CALLS = 200_000


def _per_call_us(work: Callable[[], object], calls: int = CALLS) -> float:
    clock = time.perf_counter
    started = clock()
    for _ in range(calls):
        work()
    return (clock() - started) / calls * 1e6


def _reply() -> EventEnvelope:
    return EventEnvelope("r", b"x" * 200, None, status=200, sender="costs.echo", cid="c", exec_time=0.1)


async def _request_parts() -> dict[str, float]:
    """The synchronous parts, each in a tight loop; the whole request sequentially, one in flight."""
    registry = FunctionRegistry()

    @registry.route("costs.echo", instances=64)
    async def echo(body: Any) -> Any:
        return body

    platform = Platform(AppConfig.load(argv=[], environ={}), name="costs", functions=registry)
    await platform.start()
    try:
        po = PostOffice(platform)
        body = b"x" * 200
        parts = {
            "new_event_id()": _per_call_us(new_event_id),
            "EventEnvelope(to, body)": _per_call_us(lambda: EventEnvelope("costs.echo", body)),
            "a reply EventEnvelope (status, sender, cid, exec_time)": _per_call_us(_reply),
            "time.perf_counter() x3": _per_call_us(time.perf_counter) * 3,
        }
        for _ in range(2_000):
            await po.request("costs.echo", body)
        clock = time.perf_counter
        started = clock()
        for _ in range(50_000):
            await po.request("costs.echo", body)
        parts["PostOffice.request, answered in its first step (whole, one in flight)"] = (
            (clock() - started) / 50_000 * 1e6
        )
        return parts
    finally:
        await platform.stop()


async def run() -> dict[str, float]:
    figures = await inprocess.run()
    per_request = {f"{f.name} (1 / req/s at 64)": 1e6 / f.rps_at_64 for f in figures}
    return {**per_request, **await _request_parts()}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    use_loop(args.loop)
    costs = run_async(run())
    if args.json:
        print(json.dumps({"name": "in-process request costs", "loop": args.loop, "us": costs}))
        return
    print(f"in-process request costs, µs per call ({args.loop})")
    for name, us in costs.items():
        print(f"  {us:8.2f}  {name}")


if __name__ == "__main__":
    main()
