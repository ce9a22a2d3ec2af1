"""The task an async handler runs in: a worker per busy instance, reused, and a first step taken at once.

Every step of a handler runs with its own worker task as `asyncio.current_task()`, so the handler's
`asyncio.timeout()`, `TaskGroup` and anyio cancel scopes (httpx enters them) belong to it, not to its caller.
A worker is a task that runs one execution after another, each in its own context (a copy of its caller's, as
a task of its own would take), so a request costs no task of its own.

`Worker.begin` runs an execution's first step right away, in the caller's turn, with the idle worker made the
loop's current task for that step (what Python 3.12's eager tasks do for a new task): a handler that answers
in it costs no loop turn at all. One that awaits is handed to the worker, which goes on from where it stopped.
A worker retires when something cancelled it and the handler did not take the cancellation back (its task
would carry the request into the next execution), and when the pool stops.
"""

from __future__ import annotations

import asyncio
import contextvars
from asyncio import tasks as _asyncio_tasks
from collections.abc import Callable, Generator
from typing import Any

Body = Generator[Any, Any, Any]  # one execution, step by step: yields what the handler awaits

_NOT_STARTED = object()  # a job whose first step the worker takes itself
# the current-task swap Python 3.12's eager tasks use too; without it, no first step runs at once (`begin`)
_enter_task = getattr(_asyncio_tasks, "_enter_task", None)
_leave_task = getattr(_asyncio_tasks, "_leave_task", None)
_current_tasks: dict[Any, asyncio.Task[Any]] | None = getattr(_asyncio_tasks, "_current_tasks", None)


class Worker:
    """One task running executions one after another (see the module's docstring)."""

    __slots__ = ("_body", "_context", "_done", "_loop", "_message", "_wake", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Callable[[Worker, bool], bool]) -> None:
        """`done(worker, serving)`: an execution it went on with ended; `serving`: it can take another; the
        worker goes on if `done` returns True, and ends otherwise."""
        self._loop = loop
        self._done = done
        self._body: Body | None = None
        self._message: Any = None
        self._context: contextvars.Context | None = None
        self._wake: asyncio.Future[None] | None = None
        # a context of its own, empty: each execution's steps run in that execution's context
        self.task: asyncio.Task[None] = loop.create_task(self._serve(), context=contextvars.Context())

    @property
    def parked(self) -> bool:
        """Waiting for work in its own task, so that a first step can run as it (`begin`)."""
        return self._wake is not None and self._body is None and _enter_task is not None

    def begin(self, body: Body, context: contextvars.Context) -> tuple[bool, Any]:
        """Run `body`'s first step now, as this parked worker's task, in `context`. Returns (True, its result)
        if it ended there; otherwise (False, None) and the worker goes on with it."""
        loop, task = self._loop, self.task
        assert _enter_task is not None and _leave_task is not None  # `parked` says so
        # what asyncio.current_task(loop) reads, without its Python frame on 3.11
        caller = _current_tasks.get(loop) if _current_tasks is not None else asyncio.current_task(loop)
        if caller is not None:
            _leave_task(loop, caller)
        _enter_task(loop, task)
        try:
            message = context.run(body.send, None)
        except StopIteration as stop:
            return True, stop.value
        finally:
            _leave_task(loop, task)
            if caller is not None:
                _enter_task(loop, caller)
        self._hand_over(body, message, context)
        return False, None

    def assign(self, body: Body, context: contextvars.Context) -> None:
        """Give the worker an execution to start in its own task, on a later turn."""
        self._hand_over(body, _NOT_STARTED, context)

    def _hand_over(self, body: Body, message: Any, context: contextvars.Context) -> None:
        self._body, self._message, self._context = body, message, context
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _serve(self) -> None:
        loop, task = self._loop, self.task
        while True:
            thrown: BaseException | None = None
            if self._body is None:
                self._wake = loop.create_future()
                try:
                    await self._wake
                except asyncio.CancelledError as exc:
                    if self._body is None:  # cancelled while idle: the pool stops
                        raise
                    thrown = exc  # cancelled after its first step, before this task took over: the handler's
                finally:
                    self._wake = None
            body, message, context = self._body, self._message, self._context
            assert body is not None and context is not None
            kept = False
            try:
                await _Continue(body, message, context, thrown)
            except asyncio.CancelledError:  # the body answers every error itself, not a cancellation
                pass
            finally:
                self._body = self._context = self._message = None
                kept = self._done(self, task.cancelling() == 0)
            if not kept:
                return


class _Continue:
    """Go on with `body` from its step that yielded `message` (or from its start, or by throwing `thrown`
    into it), each step in `context`. A bare yield (sleep(0)) has had its loop turn already: the worker
    only woke a turn later, so the body goes on at once."""

    __slots__ = ("body", "context", "message", "thrown")

    def __init__(
        self, body: Body, message: Any, context: contextvars.Context, thrown: BaseException | None
    ) -> None:
        self.body, self.message, self.context, self.thrown = body, message, context, thrown

    def __await__(self) -> Generator[Any, Any, None]:
        body, run = self.body, self.context.run
        thrown = self.thrown
        try:
            if thrown is not None:
                message = run(body.throw, thrown)
            elif self.message is _NOT_STARTED or self.message is None:
                message = run(body.send, None)
            else:
                message = self.message
            while True:
                try:
                    sent = yield message
                except BaseException as exc:
                    message = run(body.throw, exc)
                else:
                    message = run(body.send, sent)
        except StopIteration:
            return
