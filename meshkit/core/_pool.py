"""A function's executions: at most `instances` at a time, the rest waiting in arrival order.

An event starts at once while the function has a free instance, otherwise it waits in the backlog, and an
event whose deadline passed there is answered 408 and never run. An `async def` handler runs in a worker task
(meshkit.core._worker), reused from one execution to the next, so asyncio's and anyio's timeouts and task
groups in a handler belong to the handler. A request to a local `async def` function (and an event from the
network) runs its first step at once: a handler that answers in it hands its reply straight back, with no
loop turn and no inbox round trip. A plain `def` handler runs in one of the function's own threads, and a
streaming one in a task that feeds its outlet. What an execution answers is made in meshkit.core._outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from meshkit.core._context import INLINE, NO_DEADLINE, PROCESS, EventContext, current_event, stamp
from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError
from meshkit.core._functions import FunctionSpec
from meshkit.core._markers import X_STREAM_IDLE, X_STREAM_WINDOW, X_STREAM_WINDOW_BYTES
from meshkit.core._outcome import expired_reply, failure_of, make_reply
from meshkit.core._outlet import Outlet
from meshkit.core._producer import refusal, run_stream, stream_terms
from meshkit.core._seams import Span, Tracer
from meshkit.core._stats import RouteStats
from meshkit.core._streamhub import StreamHub
from meshkit.core._worker import Body, Worker

log = logging.getLogger("meshkit.worker")

Deliver = Callable[[EventEnvelope], None]  # sends a reply on its way (the platform's deliver_reply)
Awaited = asyncio.Future[EventEnvelope]  # a caller in this process awaits the reply: it goes straight there


class FunctionPool:
    """Runs one route's events, at most `spec.instances` at a time, in arrival order."""

    __slots__ = (
        "_backlog",
        "_context",
        "_deliver",
        "_executor",
        "_free",
        "_idle",
        "_inline",
        "_log_context",
        "_owner",
        "_streams",
        "_tasks",
        "_tracer",
        "_workers",
        "busy",
        "expired",
        "handled",
        "max_queue",
        "refused",
        "spec",
        "stats",
    )

    def __init__(
        self,
        spec: FunctionSpec,
        deliver: Deliver,
        *,
        max_queue: int,
        tracer: Tracer | None = None,
        owner: object = None,
        log_context: bool = False,
        streams: StreamHub | None = None,
    ) -> None:
        """`max_queue`: events waiting beyond it are refused; `tracer`: spans for traced events; `owner`: the
        platform an execution names in its context; `log_context`: every execution sets that context, even an
        untraced inline one (log lines name its route); `streams`: where a streaming function's outlets are
        known (credit and cancel find them there)."""
        self.spec = spec
        self.busy = 0
        self.handled = 0
        self.refused = 0
        self.expired = 0  # events whose deadline passed before they could run: answered 408, never run
        self.max_queue = max_queue
        self._deliver = deliver
        # with the time of arrival, and the future of a caller here that awaits the reply
        self._backlog: deque[tuple[EventEnvelope, float, Awaited | None]] = deque()
        self._free = list(range(spec.instances, 0, -1))  # instance numbers not in use
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: set[Worker] = set()  # the tasks async executions run in (meshkit.core._worker)
        self._idle: list[Worker] = []  # parked, for the next execution
        self._tracer = tracer
        self.stats = RouteStats()  # executions, errors, run time: read by observers (/metrics)
        self._owner = owner
        self._context = EventContext(spec.route, None, None, owner)  # an untraced execution's, prebuilt
        self._log_context = log_context
        self._streams = streams
        self._inline = spec.is_async and not spec.streaming  # driven by _steps; a stream by _stream
        # a plain `def` handler gets threads of its own, as many as its instances, so it never blocks the loop
        self._executor = (
            None
            if spec.is_async
            else ThreadPoolExecutor(max_workers=spec.instances, thread_name_prefix=f"meshkit-{spec.route}")
        )

    @property
    def answers_inline(self) -> bool:
        """An async, non-streaming function: a caller here may await its reply as a future (`submit`)."""
        return self._inline

    @property
    def queue_depth(self) -> int:
        return len(self._backlog)

    async def stop(self) -> None:
        tasks, self._tasks = [*self._tasks, *(w.task for w in self._workers)], set()
        self._workers, self._idle = set(), []
        self._backlog.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- scheduling ----------------------------------------------------------------------------------------
    def submit(
        self, event: EventEnvelope, *, inline: bool = False, awaited: Awaited | None = None
    ) -> EventEnvelope | None:
        """Start the event now if an instance is free, else queue it (AppError 503 when the queue is full).

        `inline`: the caller lets an async handler's first step run right here, in the handler's worker task
        (a request it awaits, or an event from the network, which arrives in a loop callback, not inside
        another handler). This is the one place that decides whether an event runs inline; a handler that
        finishes in its first step returns its reply, with no loop turn. Otherwise the reply goes to
        `awaited` (a caller in this process, when `answers_inline`), else to `reply_to`.
        """
        if event.trace_id is not None:
            stamp(event)  # the sender's span and route, while its context is the current one
        if self.busy < self.spec.instances:
            if self._inline:
                return self._begin(event, None, inline, awaited)
            self._spawn(self._run(event, self._acquire()))
        elif len(self._backlog) < self.max_queue:
            self._backlog.append((event, time.perf_counter(), awaited))
        else:
            self.refused += 1
            raise AppError(503, f"Route {self.spec.route} is busy: {len(self._backlog)} events waiting")
        return None

    def _acquire(self) -> int:
        self.busy += 1
        return self._free.pop()

    def _release(self, instance: int) -> None:
        self._free.append(instance)
        self.busy -= 1
        self.handled += 1
        if self._backlog:
            event, arrived, awaited = self._backlog.popleft()
            if self._inline:
                self._begin(event, arrived, False, awaited)
            else:
                self._spawn(self._run(event, self._acquire(), arrived))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, event: EventEnvelope, instance: int, arrived: float | None = None) -> None:
        try:
            reply = await self._execute(event, instance, arrived)
            if reply is not None:
                self._deliver(reply)
        except Exception:  # a bug in reply delivery must not lose the instance
            log.exception("Unable to complete event %s for %s", event.id, self.spec.route)
        finally:
            self._release(instance)

    def _begin(
        self, event: EventEnvelope, arrived: float | None, inline: bool, awaited: Awaited | None
    ) -> EventEnvelope | None:
        """Start an async handler's execution in a worker task (meshkit.core._worker). `inline`: its first
        step runs now if a worker is parked, and a reply it gives there is returned here; any other reply
        goes to `awaited`, or else to `event.reply_to`."""
        started = time.perf_counter()
        if event.deadline is not None and started > event.deadline:
            reply = self._expired(event, arrived or started)
            if inline or reply is None:
                return reply
            self._answer(reply, awaited)
            return None
        instance = self._acquire()
        context = contextvars.copy_context()
        idle = self._idle
        if idle:
            worker = idle.pop()
            if inline and worker.parked:
                execution = self._steps(event, instance, started, arrived, True, awaited)
                finished, reply = worker.begin(execution, context)
                if finished:
                    idle.append(worker)
                    return reply  # type: ignore[no-any-return]
                return None
        else:
            worker = Worker(asyncio.get_running_loop(), self._worker_done)
            self._workers.add(worker)
        worker.assign(self._steps(event, instance, started, arrived, False, awaited), context)
        return None

    def _answer(self, reply: EventEnvelope, awaited: Awaited | None) -> None:
        """Send a reply made on a later turn to its caller: the future it awaits here, else `reply.to`."""
        if awaited is not None:
            if not awaited.done():
                awaited.set_result(reply)
                return
            reply.cid = (
                None  # its caller stopped waiting: the platform counts it late, and it matches nothing
            )
        self._deliver(reply)

    def _worker_done(self, worker: Worker, serving: bool) -> bool:
        """A worker's execution ended: it waits for the next one, or ends (cancelled, or enough are idle)."""
        if serving and worker in self._workers and len(self._idle) < self.spec.instances:
            self._idle.append(worker)
            return True
        self._workers.discard(worker)
        return False

    def _steps(
        self,
        event: EventEnvelope,
        instance: int,
        started: float,
        arrived: float | None,
        inline: bool,
        awaited: Awaited | None,
    ) -> Body:
        """One execution of an async handler, driven step by step so that each step runs with its event's
        deadline (INLINE), in its own context. Returns the reply if it is `inline` and ended in its first
        step; otherwise it sends the reply on its way itself."""
        deadline = event.deadline
        span: Span | None = None
        if event.trace_id is not None:
            if self._tracer is not None:
                span = self._tracer.begin(self.spec.route, event, arrived or started)
            current_event.set(
                EventContext(self.spec.route, event.trace_id, event.trace_path, self._owner, deadline)
            )
        elif self._log_context or PROCESS.shared:
            current_event.set(self._context)
        step_deadline = NO_DEADLINE if deadline is None else deadline
        suspended = False
        try:
            coro = self._invoke_async(event, instance)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                outer, INLINE.deadline = INLINE.deadline, step_deadline
                try:
                    message = coro.send(sent) if thrown is None else coro.throw(thrown)
                except StopIteration as stop:
                    result = stop.value
                    break
                finally:
                    INLINE.deadline = outer  # before the task waits: other tasks run meanwhile
                suspended, thrown = True, None
                try:
                    sent = yield message
                except BaseException as exc:  # cancellation and friends go to the handler, as with an await
                    thrown = exc
        except Exception as exc:
            reply = make_reply(self.spec.route, self.stats, event, started, *self._failure(event, exc), span)
        else:
            reply = make_reply(self.spec.route, self.stats, event, started, 200, result, None, span)
        finally:
            if span is not None:
                span.detach()
            self._release(instance)
        if inline and not suspended:
            return reply
        if reply is not None:
            try:
                self._answer(reply, awaited)
            except Exception:  # a bug in reply delivery must not take the task down unseen
                log.exception("Unable to complete event %s for %s", event.id, self.spec.route)
        return None

    # -- execution -----------------------------------------------------------------------------------------
    def _arguments(self, event: EventEnvelope, instance: int) -> tuple[Any, ...]:
        spec = self.spec
        body = event.body
        if spec.body_model is not None and not isinstance(body, spec.body_model):
            body = spec.body_model.model_validate(body)
        if spec.arity == 1:
            return (body,)
        headers = dict(event.headers)
        if X_STREAM_WINDOW in headers:  # a stream request to a function that answers once: not its business
            del headers[X_STREAM_WINDOW]
            headers.pop(X_STREAM_WINDOW_BYTES, None)
            headers.pop(X_STREAM_IDLE, None)
        headers["my_route"] = spec.route
        if event.trace_id is not None:
            headers["my_trace_id"] = event.trace_id
            if event.trace_path is not None:
                headers["my_trace_path"] = event.trace_path
        return (headers, body, instance) if spec.arity == 3 else (headers, body)

    def _invoke_async(self, event: EventEnvelope, instance: int) -> Coroutine[Any, Any, Any]:
        return self.spec.handler(*self._arguments(event, instance))  # type: ignore[no-any-return]

    async def _execute(
        self, event: EventEnvelope, instance: int, arrived: float | None = None
    ) -> EventEnvelope | None:
        if self.spec.streaming:
            return await self._stream(event, instance, arrived)
        started = time.perf_counter()
        deadline = event.deadline
        if deadline is not None and started > deadline:
            return self._expired(event, arrived or started)
        token = current_event.set(
            self._context
            if event.trace_id is None and deadline is None
            else EventContext(self.spec.route, event.trace_id, event.trace_path, self._owner, deadline)
        )
        span: Span | None = None
        if event.trace_id is not None and self._tracer is not None:
            span = self._tracer.begin(self.spec.route, event, arrived or started)
        try:  # a plain `def` handler, in one of its own threads (async ones run in _steps)
            args = self._arguments(event, instance)
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, context.run, self.spec.handler, *args)
        except Exception as exc:
            return make_reply(self.spec.route, self.stats, event, started, *self._failure(event, exc), span)
        finally:
            if token is not None:
                current_event.reset(token)
                if span is not None:
                    span.detach()
        return make_reply(self.spec.route, self.stats, event, started, 200, result, None, span)

    async def _stream(
        self, event: EventEnvelope, instance: int, arrived: float | None
    ) -> EventEnvelope | None:
        """Run a streaming function: its segments go to the caller as they come, within its window."""
        started = time.perf_counter()
        if event.deadline is not None and started > event.deadline:
            return self._expired(event, arrived or started)
        terms = stream_terms(event)
        hub = self._streams
        if terms is None or hub is None:  # asked for one reply: the engines' 406, and it never runs
            return make_reply(
                self.spec.route, self.stats, event, started, 406, refusal(self.spec.route), "StreamRequired"
            )
        window, window_bytes, idle = terms
        try:
            arguments = self._arguments(event, instance)
        except Exception as exc:  # a body its model refuses: one error reply, before any segment
            return make_reply(self.spec.route, self.stats, event, started, *self._failure(event, exc))
        outlet = Outlet(
            hub.sender(event),
            event,
            self.spec.route,
            window=window,
            window_bytes=window_bytes,
            idle=idle,
            numbered=event.reply_to != hub.inbox,
        )
        hub.add_outlet(outlet)
        token = current_event.set(
            EventContext(self.spec.route, event.trace_id, event.trace_path, self._owner)
        )
        span: Span | None = None
        if event.trace_id is not None and self._tracer is not None:
            span = self._tracer.begin(self.spec.route, event, arrived or started)
        try:
            status, error = await run_stream(self.spec, arguments, outlet, self._failure, event)
        finally:
            hub.remove_outlet(outlet)
            current_event.reset(token)
            if span is not None:
                span.detach()
        elapsed = time.perf_counter() - started
        self.stats.observe(elapsed, status)
        self.stats.streamed(outlet.segments, outlet.bytes)
        if span is not None:
            span.end(status, elapsed, error, segments=outlet.segments, size=outlet.bytes)
        return None

    def _expired(self, event: EventEnvelope, arrived: float) -> EventEnvelope | None:
        """An event whose caller stopped waiting before it could run: never run, answered 408, counted."""
        self.expired += 1
        return expired_reply(self.spec.route, event, arrived)

    def _failure(self, event: EventEnvelope, exc: BaseException) -> tuple[int, Any, str]:
        return failure_of(self.spec.route, self.spec.body_model, event, exc)
