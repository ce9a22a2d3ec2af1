"""Every execution of an async handler is a task of its own from its first line (meshkit.core._pool, started
eagerly by meshkit.core._eager): the caller's timeout and cancellation never reach the handler, the handler's
own timeouts, task groups and anyio cancel scopes belong to it, its instance is held until it ends, and its
context, deadline, span and errors are a task's."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import uvloop

from meshkit import AppConfig, AppError, EventEnvelope, FunctionRegistry, Platform, PostOffice
from meshkit.core import FunctionPool, current_event
from meshkit.testing import running_platform
from tests.support.eventually import eventually

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("test_handler_tasks_mark", default="unset")


def awaiting(how: str, seconds: float) -> Callable[[], Awaitable[None]]:
    """`seconds` of waiting: on one future (a timer), on many in turn, or in bare yields (sleep(0))."""

    async def wait() -> None:
        if how == "future":
            await asyncio.sleep(seconds)
            return
        end = time.perf_counter() + seconds
        if how == "futures":
            while time.perf_counter() < end:  # noqa: ASYNC110  # many waits, one caller's deadline
                await asyncio.sleep(0.01)
            return
        while time.perf_counter() < end:  # noqa: ASYNC110  # bare yields on purpose
            await asyncio.sleep(0)

    return wait


def pool_of(platform: Platform, route: str) -> FunctionPool:
    pool = platform.pool(route)
    assert pool is not None
    return pool


def slow_registry(how: str, seen: list[str]) -> FunctionRegistry:
    registry = FunctionRegistry()
    wait = awaiting(how, 0.2)

    @registry.route("slow.fn", instances=1)
    async def slow(body: int) -> int:
        seen.append(f"started {body}")
        try:
            await wait()
        except asyncio.CancelledError:
            seen.append(f"cancelled {body}")
            raise
        seen.append(f"finished {body}")
        return body

    return registry


@pytest.mark.parametrize("how", ["future", "futures", "yields"])
async def test_a_caller_that_times_out_leaves_the_handler_to_finish_and_free_its_instance(how: str) -> None:
    seen: list[str] = []
    async with running_platform(slow_registry(how, seen)) as platform:
        po = PostOffice(platform)
        pool = pool_of(platform, "slow.fn")
        started = time.perf_counter()
        with pytest.raises(TimeoutError, match=r"Route slow\.fn timeout for 0\.05 s"):
            await po.request("slow.fn", 1, timeout=0.05)
        assert time.perf_counter() - started < 0.15
        assert pool.busy == 1 and seen == ["started 1"]  # still running, in its one instance
        assert platform.in_flight() == 1
        await eventually(lambda: pool.busy == 0, what="the handler finishing")
        assert seen == ["started 1", "finished 1"]
        assert platform.late_replies == 1  # its reply came after the caller gave up: dropped, counted
        assert pool.handled == 1 and pool.stats.count == 1
        # the instance is free again: the next call runs and answers
        assert (await po.request("slow.fn", 2, timeout=2)).body == 2
        assert pool.busy == 0 and pool.handled == 2
        assert not platform.replies.futures and not platform.replies.deadlines


@pytest.mark.parametrize("how", ["future", "futures", "yields"])
async def test_a_cancelled_caller_never_cancels_the_handler(how: str) -> None:
    seen: list[str] = []
    async with running_platform(slow_registry(how, seen)) as platform:
        po = PostOffice(platform)
        pool = pool_of(platform, "slow.fn")
        caller = asyncio.create_task(po.request("slow.fn", 1, timeout=5))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert pool.busy == 1
        await eventually(lambda: pool.busy == 0, what="the handler finishing")
        assert seen == ["started 1", "finished 1"]
        assert (await po.request("slow.fn", 2, timeout=2)).body == 2
        # a caller in asyncio.wait_for that gives up: the same
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(po.request("slow.fn", 3, timeout=5), 0.05)
        await eventually(lambda: pool.busy == 0, what="the third finishing")
        assert seen[-1] == "finished 3" and not any(s.startswith("cancelled") for s in seen)
        assert not platform.replies.futures and not platform.replies.deadlines


@pytest.mark.parametrize("when", ["before", "after one await", "after many awaits"])
@pytest.mark.parametrize(
    ("error", "status", "body", "exception"),
    [(AppError(409, "no"), 409, "no", "AppError"), (ValueError("bad"), 500, "bad", "ValueError")],
)
async def test_a_handler_that_raises_after_awaiting_answers_as_one_that_raises_at_once(
    when: str, error: Exception, status: int, body: str, exception: str
) -> None:
    registry = FunctionRegistry()

    @registry.route("raises.fn")
    async def raises(_: Any) -> None:
        if when != "before":
            await asyncio.sleep(0.001)
        if when == "after many awaits":
            for _ in range(20):
                await asyncio.sleep(0)
        raise error

    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("raises.fn", 1)
        assert (reply.status, reply.body, reply.exception) == (status, body, exception)
        assert reply.sender == "raises.fn" and reply.exec_time is not None and reply.round_trip is not None
        pool = pool_of(platform, "raises.fn")
        assert pool.busy == 0 and pool.stats.errors == {status: 1}


async def test_the_caller_s_correlation_id_comes_back_on_a_reply_that_came_after_an_await() -> None:
    registry = FunctionRegistry()

    @registry.route("echo.later")
    async def echo(body: Any) -> Any:
        await asyncio.sleep(0.001)
        return body

    async with running_platform(registry) as platform:
        event = EventEnvelope("echo.later", "hi", cid="mine")
        reply = await platform.call(event, 2.0)
        assert (reply.body, reply.cid, event.cid) == ("hi", "mine", "mine")


async def test_one_instance_serializes_two_awaiting_callers() -> None:
    registry = FunctionRegistry()
    running = peak = 0
    order: list[int] = []

    @registry.route("one.at.a.time", instances=1)
    async def one(body: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(body)
        await asyncio.sleep(0.02)
        await asyncio.sleep(0)
        running -= 1
        return body

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        pool = pool_of(platform, "one.at.a.time")
        first = asyncio.create_task(po.request("one.at.a.time", 0))
        await asyncio.sleep(0.005)
        assert pool.busy == 1
        second = asyncio.create_task(po.request("one.at.a.time", 1))
        await asyncio.sleep(0.005)
        assert pool.busy == 1 and pool.queue_depth == 1  # waits for the one instance
        replies = await asyncio.gather(first, second)
        assert [r.body for r in replies] == [0, 1] and order == [0, 1] and peak == 1
        assert pool.busy == 0 and pool.queue_depth == 0 and pool.handled == 2


class ContextTracer:
    """A Tracer whose spans set a context variable, as meshkit.observe's set current_span."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, int, Any]] = []

    def begin(self, route: str, event: EventEnvelope, arrived: float) -> ContextSpan:
        return ContextSpan(self, route)


class ContextSpan:
    def __init__(self, tracer: ContextTracer, route: str) -> None:
        self.tracer, self.route = tracer, route
        self.token = MARK.set(f"span of {route}")

    def detach(self) -> None:
        MARK.reset(self.token)

    def end(self, status: int, elapsed: float, result: Any) -> None:
        self.tracer.ended.append((self.route, status, MARK.get()))


async def test_after_an_await_the_handler_still_has_its_own_context_trace_and_span() -> None:
    registry = FunctionRegistry()
    seen: dict[str, Any] = {}

    @registry.route("ctx.outer")
    async def outer(headers: dict[str, str], body: Any) -> Any:
        await asyncio.sleep(0.001)
        context = current_event.get()
        assert context is not None
        seen["outer"] = (context.route, context.trace_id, headers.get("my_trace_id"), MARK.get())
        MARK.set("set by the handler")  # its own context: never the caller's
        reply = await PostOffice().request("ctx.inner", body)
        seen["after inner"] = MARK.get()
        return reply.body

    @registry.route("ctx.inner")
    async def inner(headers: dict[str, str], body: Any) -> Any:
        await asyncio.sleep(0)
        context = current_event.get()
        assert context is not None
        seen["inner"] = (context.route, context.trace_id, headers.get("my_trace_id"), MARK.get())
        return body

    platform = Platform(AppConfig.load(argv=[], environ={}), name="ctx", functions=list(registry))
    tracer = ContextTracer()
    platform.tracer = tracer
    await platform.start()
    try:
        token = MARK.set("the caller's")
        reply = await PostOffice(platform, trace_id="t-1").request("ctx.outer", 7)
        assert reply.body == 7 and reply.trace_id == "t-1"
        assert MARK.get() == "the caller's" and current_event.get() is None
        MARK.reset(token)
    finally:
        await platform.stop()
    assert seen["outer"] == ("ctx.outer", "t-1", "t-1", "span of ctx.outer")
    assert seen["inner"] == ("ctx.inner", "t-1", "t-1", "span of ctx.inner")
    assert seen["after inner"] == "set by the handler"
    # each span ended once, in its execution's context
    assert tracer.ended == [("ctx.inner", 200, "span of ctx.inner"), ("ctx.outer", 200, "set by the handler")]


async def test_a_handler_that_awaits_many_times_keeps_its_deadline_at_each_step() -> None:
    registry = FunctionRegistry()
    left: list[float] = []

    @registry.route("many.awaits")
    async def many(body: int) -> int:
        loop = asyncio.get_running_loop()
        gate = asyncio.Event()
        loop.call_later(0.005, gate.set)
        total = 0
        for n in range(body):
            if n % 50 == 0:
                await asyncio.sleep(0.001)  # a timer
            elif n % 50 == 1:
                future: asyncio.Future[int] = loop.create_future()
                loop.call_soon(future.set_result, 1)
                total += await future - 1  # a future another callback answers
            else:
                await asyncio.sleep(0)  # a bare yield
            total += 1
            left.append(PostOffice().time_left(60))
        await gate.wait()
        return total

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        results = await asyncio.gather(*(po.request("many.awaits", 200, timeout=5) for _ in range(3)))
        assert [r.body for r in results] == [200, 200, 200]
        assert po.time_left(60) == 60  # out here, nobody's deadline applies
        assert len(left) == 600 and all(0 < x <= 5 for x in left)
        assert pool_of(platform, "many.awaits").busy == 0


async def test_nested_awaiting_requests_and_a_caller_cancelled_while_the_inner_one_waits() -> None:
    registry = FunctionRegistry()
    seen: list[str] = []

    @registry.route("nest.outer", instances=2)
    async def outer(body: float) -> Any:
        await asyncio.sleep(0)
        reply = await PostOffice().request("nest.inner", body)
        await asyncio.sleep(0.001)
        seen.append(f"outer got {reply.body}")
        return {"inner": reply.body}

    @registry.route("nest.inner", instances=2)
    async def inner(body: float) -> float:
        await asyncio.sleep(body)
        seen.append(f"inner {body}")
        return body * 2

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        assert (await po.request("nest.outer", 0.001)).body == {"inner": 0.002}
        # the outer caller gives up while the inner handler waits: both go on to their end
        caller = asyncio.create_task(po.request("nest.outer", 0.2, timeout=5))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        outer_pool, inner_pool = pool_of(platform, "nest.outer"), pool_of(platform, "nest.inner")
        assert outer_pool.busy == inner_pool.busy == 1
        await eventually(lambda: outer_pool.busy == inner_pool.busy == 0, what="both finishing")
        assert seen == ["inner 0.001", "outer got 0.002", "inner 0.2", "outer got 0.4"]
        assert platform.late_replies == 1  # the outer one's; the inner one reached its (detached) caller
        assert not platform.replies.futures and not platform.replies.deadlines


async def test_an_inner_request_times_out_inside_a_handler_that_awaited_first() -> None:
    registry = FunctionRegistry()

    @registry.route("short.outer")
    async def outer(_: Any) -> str:
        await asyncio.sleep(0)
        try:
            await PostOffice().request("short.inner", None, timeout=0.05)
        except TimeoutError as exc:
            return f"gave up: {exc}"
        return "answered"

    @registry.route("short.inner")
    async def inner(_: Any) -> None:
        await asyncio.sleep(0.2)

    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("short.outer", None, timeout=2)
        assert reply.body == "gave up: Route short.inner timeout for 0.05 s"
        await eventually(lambda: pool_of(platform, "short.inner").busy == 0, what="the inner one ending")
        assert platform.late_replies == 1


async def test_a_handler_that_dies_of_its_own_cancellation_after_an_await_leaves_its_caller_to_time_out() -> (
    None
):
    registry = FunctionRegistry()

    @registry.route("self.cancel")
    async def cancels(_: Any) -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError  # as a task of its own would end: no reply

    async with running_platform(registry) as platform:
        with pytest.raises(TimeoutError):
            await PostOffice(platform).request("self.cancel", None, timeout=0.05)
        assert pool_of(platform, "self.cancel").busy == 0


@pytest.mark.parametrize("how", ["future", "yields"])
async def test_stopping_cancels_an_awaiting_handler_and_its_caller_hears_so(how: str) -> None:
    seen: list[str] = []
    platform = Platform(
        AppConfig.load(argv=[], environ={}), name="stopping", functions=list(slow_registry(how, seen))
    )
    await platform.start()
    caller = asyncio.create_task(PostOffice(platform).request("slow.fn", 1, timeout=5))
    await asyncio.sleep(0.02)
    pool = pool_of(platform, "slow.fn")
    await platform.stop()
    with pytest.raises(AppError) as raised:
        await caller
    assert raised.value.status == 503
    assert seen == ["started 1", "cancelled 1"] and pool.busy == 0


@pytest.mark.parametrize("when", ["in its first step", "after an await"])
async def test_a_handler_s_own_asyncio_timeout_times_out_the_handler(when: str) -> None:
    registry = FunctionRegistry()

    @registry.route("own.timeout")
    async def own(_: Any) -> str:
        if when == "after an await":
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(0.3)
        except TimeoutError:
            return "timed out"
        return "slept"

    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("own.timeout", None, timeout=2)
        assert reply.body == "timed out"


@pytest.mark.parametrize("when", ["in its first step", "after an await"])
async def test_an_anyio_cancel_scope_in_a_handler_belongs_to_the_handler(when: str) -> None:
    """httpx and every anyio library enter cancel scopes: one entered in the handler's first step and left
    after it awaited must be entered and left in the same task."""
    registry = FunctionRegistry()

    @registry.route("anyio.scope")
    async def scoped(_: Any) -> str:
        if when == "after an await":
            await asyncio.sleep(0)
        with anyio.fail_after(1):
            await asyncio.sleep(0.01)
        try:
            with anyio.fail_after(0.02):
                await asyncio.sleep(0.3)
        except TimeoutError:
            return "timed out"
        return "slept"

    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("anyio.scope", None, timeout=2)
        assert (reply.status, reply.body) == (200, "timed out")


async def test_a_task_group_in_a_handler_s_first_step_is_the_handler_s() -> None:
    registry = FunctionRegistry()

    @registry.route("task.group")
    async def grouped(body: int) -> list[int]:
        async def child(n: int) -> int:
            await asyncio.sleep(0.001 * n)
            return n * 10

        async with asyncio.TaskGroup() as group:
            children = [group.create_task(child(n)) for n in range(body)]
        return [c.result() for c in children]

    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("task.group", 3, timeout=2)
        assert reply.body == [0, 10, 20]


async def test_a_handler_s_task_is_its_own_from_its_first_line_to_its_last() -> None:
    registry = FunctionRegistry()
    tasks: dict[str, asyncio.Task[Any] | None] = {}

    @registry.route("whose.task")
    async def whose(awaits: bool) -> bool:
        tasks["first"] = asyncio.current_task()
        if awaits:
            await asyncio.sleep(0)
        tasks["last"] = asyncio.current_task()
        return awaits

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        caller = asyncio.current_task()
        for awaits in (False, True):
            assert (await po.request("whose.task", awaits)).body is awaits
            assert tasks["first"] is not None and tasks["first"] is tasks["last"]
            assert tasks["first"] is not caller
        assert asyncio.current_task() is caller  # the caller's task is current again after the first step


async def test_a_handler_s_context_variables_stay_its_own() -> None:
    registry = FunctionRegistry()

    @registry.route("sets.mark")
    async def sets(awaits: bool) -> str:
        before = MARK.get()
        MARK.set("the handler's")
        if awaits:
            await asyncio.sleep(0)
        return before

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        token = MARK.set("the caller's")
        try:
            for awaits in (False, True):
                # the handler had a copy of the caller's context
                assert (await po.request("sets.mark", awaits)).body == "the caller's"
                assert MARK.get() == "the caller's"  # never the handler's
        finally:
            MARK.reset(token)


def test_a_timeout_that_fires_before_the_handler_s_task_takes_over_reaches_the_handler_on_uvloop() -> None:
    """uvloop runs due timers before callbacks made ready, so a handler's zero-length timeout can fire
    between its first step and its task's first turn: the cancellation must still reach the handler."""
    registry = FunctionRegistry()

    @registry.route("zero.timeout")
    async def zero(_: Any) -> str:
        try:
            async with asyncio.timeout(0):
                await asyncio.sleep(0.5)
        except TimeoutError:
            return "timed out"
        return "slept"

    async def main() -> tuple[int, Any, int]:
        async with running_platform(registry) as platform:
            reply = await PostOffice(platform).request("zero.timeout", None, timeout=2)
            return reply.status, reply.body, pool_of(platform, "zero.timeout").busy

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == (200, "timed out", 0)


async def test_one_worker_runs_execution_after_execution_each_in_its_own_context() -> None:
    registry = FunctionRegistry()
    seen: list[tuple[str, int]] = []

    @registry.route("reused.worker", instances=1)
    async def reused(awaits: bool) -> str:
        before = MARK.get()
        MARK.set("left behind by the last one")
        if awaits:
            await asyncio.sleep(0)
        task = asyncio.current_task()
        assert task is not None
        seen.append((before, id(task)))
        return before

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        for n, awaits in enumerate([True, False, True, True, False]):
            token = MARK.set(f"caller {n}")
            try:
                assert (await po.request("reused.worker", awaits)).body == f"caller {n}"
            finally:
                MARK.reset(token)
        assert [before for before, _ in seen] == [f"caller {n}" for n in range(5)]
        assert len({task for _, task in seen}) == 1  # one instance: one worker, reused
        assert len(pool_of(platform, "reused.worker")._workers) == 1


async def test_there_are_never_more_workers_than_instances() -> None:
    registry = FunctionRegistry()

    @registry.route("four.instances", instances=4)
    async def four(body: int) -> int:
        await asyncio.sleep(0.001)
        return body

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        pool = pool_of(platform, "four.instances")
        for _ in range(3):
            replies = await asyncio.gather(*(po.request("four.instances", n) for n in range(100)))
            assert [r.body for r in replies] == list(range(100))
            assert len(pool._workers) <= 4 and len(pool._idle) <= 4
        assert pool.busy == 0 and pool.handled == 300


async def test_a_handler_that_keeps_a_cancellation_retires_its_worker_and_the_next_call_is_served() -> None:
    """A handler that swallows a cancellation of its task without taking it back (Task.uncancel) leaves the
    task cancelling: its worker must not carry that into the next execution."""
    registry = FunctionRegistry()
    tasks: list[asyncio.Task[Any]] = []

    @registry.route("swallows.cancel", instances=1)
    async def swallows(swallow: bool) -> str:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        if swallow:
            task.cancel()
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                return "swallowed"
        await asyncio.sleep(0.001)
        return "plain"

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        assert (await po.request("swallows.cancel", False)).body == "plain"
        assert (await po.request("swallows.cancel", True)).body == "swallowed"
        pool = pool_of(platform, "swallows.cancel")
        await eventually(lambda: tasks[1].done(), what="the cancelled worker ending")
        for _ in range(3):  # served by a fresh worker, whose awaits are not cancelled
            assert (await po.request("swallows.cancel", False)).body == "plain"
        assert tasks[0] is tasks[1] and tasks[2] is not tasks[1]
        assert pool.busy == 0 and len(pool._workers) == 1
