"""How far below the awaiting floor a worker-task design must be, feature by feature (issue 14, part 3).

Not meshkit: a minimal model of its in-process request to an async handler that awaits once. A pool of 64
worker tasks; the caller runs the handler's first step as the worker's task (the current-task swap meshkit's
Worker.begin makes), hands the suspended handler to its worker, and awaits a future the worker resolves.
Each row adds one of the things a meshkit request does to the row before:

    1. the design alone: a bare `(body, future)` pair, nothing else
    2. + its EventEnvelopes: the request and the reply, built the way the bus builds them
    3. + run time and metrics: two clock reads and a histogram observation per execution
    4. + the step deadline: the handler's deadline set around each of its steps (INLINE)
    5. + the handler's headers: a copy of the event's, with `my_route` in it (the three-argument handler)
    6. + a correlation table: a cid per request, its future and deadline registered and forgotten, the reply
       found by its cid (what meshkit no longer does in process, since the reply goes to its future)

Then the other design a request could have: the caller's own task takes the handler's steps, each as the
handler's worker task (the same current-task swap), so a handler that awaits once costs one task wakeup, not
the worker's and then the caller's. Its rows:

    7. the caller's task takes the steps, with the features of rows 2-5
    8. + the caller's deadline kept in the one sweep (PendingReplies.expect_local), as meshkit keeps it

Each ratio is against the awaiting floor (bench.inprocess) measured in the same run, interleaved.

    python -m bench.inprocess_design [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import time
from asyncio import tasks as _tasks
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from bench.common import IN_FLIGHT, LOOPS, run_async, use_loop
from meshkit.core._context import INLINE
from meshkit.core._envelope import new_event_id, reply_event, request_event
from meshkit.core._replies import PendingReplies
from meshkit.core._stats import RouteStats

PAYLOAD = b"x" * 200
ROWS = (
    "the design alone",
    "+ its EventEnvelopes",
    "+ run time and metrics",
    "+ the step deadline",
    "+ the handler's headers",
    "+ a correlation table",
    "the caller's task takes the steps",
    "+ its deadline in the sweep",
)
_enter: Callable[[Any, Any], None] = getattr(_tasks, "_enter_task")  # noqa: B009  (private, typed here)
_leave: Callable[[Any, Any], None] = getattr(_tasks, "_leave_task")  # noqa: B009
_current: dict[Any, Any] = getattr(_tasks, "_current_tasks")  # noqa: B009


class _Yield:
    """Hands what a step of the handler yielded to the worker's task (as meshkit.core._worker does)."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.message)


class Model:
    """One row's request path: `level` is how many rows of features it has (1-6)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, level: int) -> None:
        self.loop, self.level = loop, level
        self.stats, self.replies = RouteStats(), PendingReplies()
        self.idle: list[_Worker] = []
        self.workers = [_Worker(self) for _ in range(IN_FLIGHT)]

    async def handler(self, headers: dict[str, str], body: Any, instance: int) -> Any:
        await asyncio.sleep(0)
        return body

    def submit(self, event: Any, future: asyncio.Future[Any] | None) -> None:
        worker, loop, level = self.idle.pop(), self.loop, self.level
        worker.started = time.perf_counter() if level >= 3 else 0.0
        headers = event.headers
        if level >= 5:
            headers = dict(headers)
            headers["my_route"] = "bench.echo"
        caller = _current.get(loop)
        if caller is not None:
            _leave(loop, caller)
        _enter(loop, worker.task)
        coro = self.handler(headers, event.body, 1)
        outer = INLINE.deadline
        if level >= 4:
            INLINE.deadline = event.deadline
        try:
            message = contextvars.copy_context().run(coro.send, None)
        finally:
            INLINE.deadline = outer
            _leave(loop, worker.task)
            if caller is not None:
                _enter(loop, caller)
        worker.hand(coro, message, event, future)

    def answer(self, worker: _Worker, event: Any, result: Any, future: asyncio.Future[Any] | None) -> None:
        level = self.level
        reply = result
        if level >= 2:
            reply = reply_event(event.reply_to, result, None, 200, "bench.echo", event.cid, 0.0, None)
        if level >= 3:
            self.stats.observe(time.perf_counter() - worker.started, 200)
        if level >= 6:
            self.replies.resolve(reply)
        elif future is not None:
            future.set_result(reply)
        self.idle.append(worker)

    async def request(self) -> Any:
        loop, level = self.loop, self.level
        if level >= 2:
            event: Any = request_event("bench.echo", PAYLOAD, {})
        else:
            event = _Bare()
        event.reply_to, event.deadline = "inbox", time.perf_counter() + 10.0
        if level >= 6:
            cid = event.cid = new_event_id()
            future = self.replies.expect(loop, cid, "bench.echo", 10.0)
            self.submit(event, None)
            try:
                return await future
            finally:
                self.replies.done(cid)
        mine: asyncio.Future[Any] = loop.create_future()
        self.submit(event, mine)
        return await mine

    def stop(self) -> None:
        for worker in self.workers:
            worker.task.cancel()
        self.replies.stop("done")


class _Bare:
    __slots__ = ("body", "cid", "deadline", "headers", "reply_to", "to")

    def __init__(self) -> None:
        self.to, self.body, self.cid = "bench.echo", PAYLOAD, None
        self.headers: dict[str, str] = {}


class _Worker:
    __slots__ = ("_wake", "coro", "event", "future", "message", "model", "started", "task")

    def __init__(self, model: Model) -> None:
        self.model, self.started = model, 0.0
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.event: Any = None
        self.future: asyncio.Future[Any] | None = None
        self.message: Any = None
        self._wake: asyncio.Future[None] | None = None
        self.task = model.loop.create_task(self._serve(), context=contextvars.Context())

    def hand(self, coro: Coroutine[Any, Any, Any], message: Any, event: Any, future: Any) -> None:
        self.coro, self.message, self.event, self.future = coro, message, event, future
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _serve(self) -> None:
        model = self.model
        model.idle.append(self)
        while True:
            self._wake = model.loop.create_future()
            await self._wake
            coro, event = self.coro, self.event
            assert coro is not None
            outer = INLINE.deadline
            try:
                if model.level >= 4:
                    INLINE.deadline = event.deadline
                try:
                    message = coro.send(None)  # the bare yield had its turn: go on at once
                finally:
                    INLINE.deadline = outer
                while True:  # any further await: not taken by this handler
                    await _Yield(message)
            except StopIteration as stop:
                model.answer(self, event, stop.value, self.future)


class _Steps:
    """The caller's task takes the handler's steps, each with `worker` as the loop's current task."""

    __slots__ = ("context", "coro", "deadline", "loop", "worker")

    def __init__(self, coro: Coroutine[Any, Any, Any], deadline: float, worker: Any, loop: Any) -> None:
        self.coro, self.deadline, self.worker, self.loop = coro, deadline, worker, loop
        self.context = contextvars.copy_context()

    def done(self) -> bool:  # what PendingReplies' sweep asks of what it holds
        return False

    def set_exception(self, exc: BaseException, /) -> None:
        raise exc  # never reached: every deadline is 10 s away

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run, worker, loop = self.coro, self.context.run, self.worker, self.loop
        sent: Any = None
        while True:
            caller = _current.get(loop)
            _leave(loop, caller)
            _enter(loop, worker)
            outer, INLINE.deadline = INLINE.deadline, self.deadline
            try:
                message = run(coro.send, sent)
            except StopIteration as stop:
                return stop.value
            finally:
                INLINE.deadline = outer
                _leave(loop, worker)
                _enter(loop, caller)
            sent = yield message


class CallerModel:
    """Rows 7 and 8: the caller's task runs the handler (`sweep`: its deadline is kept in PendingReplies)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sweep: bool) -> None:
        self.loop, self.sweep = loop, sweep
        self.stats, self.replies = RouteStats(), PendingReplies()
        # tasks that stand for the handler's parked workers: each step runs as one of them
        self.workers = [loop.create_task(asyncio.sleep(3600)) for _ in range(IN_FLIGHT)]

    async def handler(self, headers: dict[str, str], body: Any, instance: int) -> Any:
        await asyncio.sleep(0)
        return body

    async def request(self) -> Any:
        loop = self.loop
        event = request_event("bench.echo", PAYLOAD, {})
        event.reply_to, event.deadline = "inbox", time.perf_counter() + 10.0
        started = time.perf_counter()
        headers = dict(event.headers)
        headers["my_route"] = "bench.echo"
        steps = _Steps(self.handler(headers, event.body, 1), event.deadline, self.workers.pop(), loop)
        entry: Any = steps  # the sweep holds what has done() and set_exception(): a future in meshkit
        if self.sweep:
            self.replies.expect_local(loop, entry, "bench.echo", 10.0)
        try:
            result = await steps
        finally:
            if self.sweep:
                self.replies.local.pop(entry, None)
            self.workers.append(steps.worker)
        reply = reply_event(event.reply_to, result, None, 200, "bench.echo", event.cid, 0.0, None)
        self.stats.observe(time.perf_counter() - started, 200)
        return reply

    def stop(self) -> None:
        for worker in self.workers:
            worker.cancel()
        self.replies.stop("done")


async def _throughput(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    per_caller = calls // IN_FLIGHT

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return per_caller * IN_FLIGHT / (time.perf_counter() - started)


async def _floor() -> tuple[Callable[[], Awaitable[Any]], Callable[[], None]]:
    queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while True:
            body, future = await queue.get()
            await asyncio.sleep(0)
            future.set_result(body)

    workers = [asyncio.create_task(worker()) for _ in range(IN_FLIGHT)]

    async def call() -> Any:
        future: asyncio.Future[Any] = loop.create_future()
        queue.put_nowait((PAYLOAD, future))
        return await future

    def stop() -> None:
        for task in workers:
            task.cancel()

    return call, stop


async def run(calls: int = 100_000, rounds: int = 3) -> list[tuple[str, float]]:
    """(row, its req/s against the awaiting floor's): medians of `rounds` interleaved runs."""
    loop = asyncio.get_running_loop()
    floor, stop_floor = await _floor()
    models: list[Model | CallerModel] = [Model(loop, level) for level in range(1, 7)]
    models += [CallerModel(loop, sweep=False), CallerModel(loop, sweep=True)]
    await asyncio.sleep(0)  # every worker parked
    ratios: list[list[float]] = [[] for _ in ROWS]
    try:
        for _ in range(rounds):
            for index, model in enumerate(models):
                floor_rps = await _throughput(floor, calls)
                ratios[index].append(await _throughput(model.request, calls) / floor_rps)
    finally:
        stop_floor()
        for model in models:
            model.stop()
        await asyncio.sleep(0)
    return [(row, sorted(r)[len(r) // 2]) for row, r in zip(ROWS, ratios, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    args = parser.parse_args(argv)
    use_loop(args.loop)
    print(f"req/s against the awaiting floor's, {args.loop}:")
    for row, ratio in run_async(run()):
        print(f"  {ratio:5.2f}x  {row}")


if __name__ == "__main__":
    main()
