"""Polling until something holds, for state that no event signals: a process's log, another thread's list.

    reply = await eventually(lambda: inbox.get("c1"), what="the reply in the inbox")
    line = wait_until(lambda: "ready" in server.log_text(), timeout=10, what="ready in the log")

`eventually` (async tests) and `wait_until` (sync ones) are one poll: the predicate is called until it gives
something truthy, which is returned; past `timeout` seconds an AssertionError names `what`, the timeout, the
last value seen and, when given, what `describe()` says the world looked like. An async test's predicate may
also return an awaitable (an `async def` predicate), which is awaited each time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

TIMEOUT = 5.0
INTERVAL = 0.05


class _Poll:
    """The deadline and the failure of one poll, shared by the sync and the async loop."""

    def __init__(self, timeout: float, what: str, describe: Callable[[], object] | None) -> None:
        self.timeout = timeout
        self.what = what
        self.describe = describe
        self.deadline = time.monotonic() + timeout

    def met(self, value: object) -> bool:
        """True when `value` ends the poll; AssertionError once the deadline has passed without."""
        if value:
            return True
        if time.monotonic() > self.deadline:
            state = f"\n{self.describe()}" if self.describe is not None else ""
            raise AssertionError(
                f"{self.what} not met within {self.timeout:g} s; last seen: {value!r}{state}"
            )
        return False


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = TIMEOUT,
    what: str = "the condition",
    describe: Callable[[], object] | None = None,
    interval: float = INTERVAL,
) -> T:
    """Call `predicate` every `interval` s until it returns something truthy, and return that."""
    poll = _Poll(timeout, what, describe)
    while True:
        value = predicate()
        if poll.met(value):
            return value  # type: ignore[return-value]  # truthy: not None
        time.sleep(interval)


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    what: str = ...,
    describe: Callable[[], object] | None = ...,
    interval: float = ...,
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T | None],
    *,
    timeout: float = ...,
    what: str = ...,
    describe: Callable[[], object] | None = ...,
    interval: float = ...,
) -> T: ...


async def eventually(
    predicate: Callable[[], object],
    *,
    timeout: float = TIMEOUT,
    what: str = "the condition",
    describe: Callable[[], object] | None = None,
    interval: float = INTERVAL,
) -> object:
    """`wait_until` for a test on the event loop, which runs (records travel, tasks go on) between calls."""
    poll = _Poll(timeout, what, describe)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if poll.met(value):
            return value
        await asyncio.sleep(interval)
