"""What every benchmark shares: the method of BENCH.md and its output (a table, or JSON lines)."""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")

WARM_UP = 200
SEQUENTIAL = 2_000
IN_FLIGHT = 64
THROUGHPUT_CALLS = 5_000


@dataclass
class Figure:
    name: str
    payload_bytes: int
    p50_ms: float
    p99_ms: float
    rps_at_64: float
    floor: str | None = None
    p50_ratio: float | None = None
    rps_ratio: float | None = None
    runs: int = 1  # the figures are the medians of this many runs
    rps_range: tuple[float, float] | None = None  # the lowest and highest req/s of those runs
    # requests without a reply in time, in all those runs (None: a path that raises on one instead)
    lost: int | None = None

    def against(self, floor: Figure) -> Figure:
        self.floor = floor.name
        self.p50_ratio = round(self.p50_ms / floor.p50_ms, 3)
        self.rps_ratio = round(self.rps_at_64 / floor.rps_at_64, 3)
        return self


async def measure(
    name: str,
    payload_bytes: int,
    call: Callable[[], Awaitable[object]],
    *,
    sequential: int = SEQUENTIAL,
    throughput_calls: int = THROUGHPUT_CALLS,
) -> Figure:
    """Warm up, then p50/p99 of sequential calls, then requests/s with 64 callers each awaiting in turn."""
    gc.collect()  # every figure starts from the same collector state, not the garbage of the one before
    for _ in range(WARM_UP):
        await call()
    latencies = []
    clock = time.perf_counter
    for _ in range(sequential):
        started = clock()
        await call()
        latencies.append(clock() - started)
    latencies.sort()
    per_caller = max(1, throughput_calls // IN_FLIGHT)

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    started = clock()
    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    elapsed = clock() - started
    return Figure(
        name=name,
        payload_bytes=payload_bytes,
        p50_ms=round(statistics.median(latencies) * 1000, 4),
        p99_ms=round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 4),
        rps_at_64=round(per_caller * IN_FLIGHT / elapsed, 1),
    )


INTERLEAVED_BURSTS = 6  # throughput bursts per path, alternating


async def measure_interleaved(
    calls: Mapping[str, Callable[[], Awaitable[object]]],
    payload_bytes: int,
    *,
    sequential: int = SEQUENTIAL,
    throughput_calls: int = THROUGHPUT_CALLS,
) -> dict[str, Figure]:
    """`measure` for several paths at once, interleaved, so that what else the machine does hits them alike:
    the sequential calls alternate (one to each in turn, the first of each round alternating too), and the
    throughput is taken in short bursts at 64 in flight, alternating. For figures a few per cent apart."""
    names = list(calls)
    for _ in range(WARM_UP):
        for name in names:
            await calls[name]()
    latencies: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for n in range(sequential):
        for name in names if n % 2 == 0 else reversed(names):
            started = clock()
            await calls[name]()
            latencies[name].append(clock() - started)
    per_caller = max(1, throughput_calls // IN_FLIGHT // INTERLEAVED_BURSTS)
    busy = dict.fromkeys(names, 0.0)

    async def caller(call: Callable[[], Awaitable[object]]) -> None:
        for _ in range(per_caller):
            await call()

    for burst in range(INTERLEAVED_BURSTS):
        for name in names if burst % 2 == 0 else reversed(names):
            started = clock()
            await asyncio.gather(*(caller(calls[name]) for _ in range(IN_FLIGHT)))
            busy[name] += clock() - started
    figures = {}
    for name in names:
        ordered = sorted(latencies[name])
        figures[name] = Figure(
            name=name,
            payload_bytes=payload_bytes,
            p50_ms=round(statistics.median(ordered) * 1000, 4),
            p99_ms=round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 4),
            rps_at_64=round(per_caller * IN_FLIGHT * INTERLEAVED_BURSTS / busy[name], 1),
        )
    return figures


def median_of(runs: Sequence[Figure]) -> Figure:
    """One figure from several runs of the same measurement: the median of each value, and the req/s range."""
    first = runs[0]
    rps = [run.rps_at_64 for run in runs]
    return Figure(
        name=first.name,
        payload_bytes=first.payload_bytes,
        p50_ms=round(statistics.median(run.p50_ms for run in runs), 4),
        p99_ms=round(statistics.median(run.p99_ms for run in runs), 4),
        rps_at_64=round(statistics.median(rps), 1),
        runs=len(runs),
        rps_range=(min(rps), max(rps)),
        lost=None if all(run.lost is None for run in runs) else sum(run.lost or 0 for run in runs),
    )


# uvloop by default, as meshkit apps run on it under uvicorn[standard]; `--loop asyncio` measures the other
LOOPS = ("uvloop", "asyncio")
_loop = {"kind": "uvloop"}


def use_loop(kind: str) -> None:
    """The event loop every client side runs on from now on ("uvloop" or "asyncio")."""
    if kind not in LOOPS:
        raise ValueError(f"unknown event loop {kind!r}: one of {', '.join(LOOPS)}")
    _loop["kind"] = kind


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark's client side on the chosen loop (asyncio's own when uvloop is not installed).

    Every client side, floors included, goes through here, so a figure and its floor share one loop kind.
    """
    if _loop["kind"] == "uvloop":
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    return asyncio.run(main)


def report(figures: list[Figure], as_json: bool) -> None:
    if as_json:
        for figure in figures:
            print(json.dumps(asdict(figure)), flush=True)
        return
    print(
        f"{'name':<34} {'payload':>8} {'p50 ms':>9} {'p99 ms':>9} {'req/s@64':>10} {'p50 x':>7} {'rps x':>7}"
        f"  {'runs: req/s range':<18}"
    )
    for f in figures:
        ratios = f"{f.p50_ratio:>7.2f} {f.rps_ratio:>7.2f}" if f.floor else f"{'floor':>7} {'':>7}"
        figures_text = f"{f.p50_ms:>9.4f} {f.p99_ms:>9.4f} {f.rps_at_64:>10.0f}"
        spread = f"{f.runs}: {f.rps_range[0]:.0f}-{f.rps_range[1]:.0f}" if f.rps_range else ""
        if f.lost:
            spread += f"  lost {f.lost}"
        print(f"{f.name:<34} {f.payload_bytes:>8} {figures_text} {ratios}  {spread}")
