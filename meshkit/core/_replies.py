"""The requests a platform awaits replies for: by cid, the future a reply resolves, the deadline that fails
it, and, for a request sent to another app, that app's origin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError

Deadline = tuple[float, str | None, float]  # when (loop time), the route, the timeout it was given


class PendingReplies:
    """One platform's pending requests. Event loop only.

    One timer sweeps every deadline, not one each: cheaper than call_later and cancel per request.
    """

    __slots__ = ("_loop", "_sweep_at", "_sweep_handle", "deadlines", "futures", "local", "targets")

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[EventEnvelope]] = {}
        self.deadlines: dict[str, Deadline] = {}
        # cid -> the remote origin the request went to (the last, if retried)
        self.targets: dict[str, str] = {}
        # a request to a function here, whose reply comes straight to its future (no cid): its deadline
        self.local: dict[asyncio.Future[EventEnvelope], Deadline] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_at: float | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None

    def expect(
        self, loop: asyncio.AbstractEventLoop, cid: str, route: str | None, timeout: float
    ) -> asyncio.Future[EventEnvelope]:
        """The future the reply to `cid` resolves; it fails with TimeoutError `timeout` seconds from now."""
        future: asyncio.Future[EventEnvelope] = loop.create_future()
        self.futures[cid] = future
        self.deadlines[cid] = self._deadline(loop, route, timeout)
        return future

    def expect_local(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[EventEnvelope],
        route: str | None,
        timeout: float,
    ) -> None:
        """`future` (a reply from a function here) fails with TimeoutError `timeout` seconds from now."""
        self.local[future] = self._deadline(loop, route, timeout)

    def _deadline(self, loop: asyncio.AbstractEventLoop, route: str | None, timeout: float) -> Deadline:
        """The deadline entry `timeout` seconds from now, the sweep brought forward to it if need be."""
        self._loop = loop
        when = loop.time() + timeout
        if self._sweep_at is None or when < self._sweep_at:
            self._schedule_sweep(when)
        return (when, route, timeout)

    def again(self, cid: str) -> asyncio.Future[EventEnvelope]:
        """A new future for `cid`, within its deadline (a request sent again, or waited for again)."""
        assert self._loop is not None  # `expect` came first
        future: asyncio.Future[EventEnvelope] = self._loop.create_future()
        self.futures[cid] = future
        return future

    def within_deadline(self, cid: str) -> bool:
        return cid in self.deadlines

    def waiting(self, cid: str) -> bool:
        """Whether a request with this cid still awaits its reply."""
        return cid in self.futures

    def done(self, cid: str) -> None:
        """The request ended (replied, failed or timed out): forget it."""
        self.futures.pop(cid, None)
        self.deadlines.pop(cid, None)
        self.targets.pop(cid, None)

    def resolve(self, reply: EventEnvelope) -> bool:
        """Hand `reply` to the request waiting for it; False when none is (late, unknown, or a stream's)."""
        future = self.futures.pop(reply.cid, None) if reply.cid is not None else None
        if future is None:
            return False
        if not future.done():
            future.set_result(reply)
        return True

    def sent_to(self, origin: str) -> list[str]:
        """The requests waiting for a reply from `origin`."""
        return [cid for cid, target in self.targets.items() if target == origin and cid in self.futures]

    def sent_elsewhere(self, cids: Iterable[str]) -> list[str]:
        """Those of `cids` that wait for a reply from another app."""
        return [cid for cid in cids if cid in self.futures and cid in self.targets]

    def stop(self, message: str) -> None:
        """The platform stops: every request waiting fails with a 503."""
        for future in (*self.futures.values(), *self.local):
            if not future.done():
                future.set_exception(AppError(503, message))
        self.futures.clear()
        self.deadlines.clear()
        self.local.clear()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_handle = self._sweep_at = None

    def _schedule_sweep(self, when: float) -> None:
        assert self._loop is not None
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = when
        self._sweep_handle = self._loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        self._sweep_handle = self._sweep_at = None
        now = self._loop.time()
        for cid in [cid for cid, entry in self.deadlines.items() if entry[0] <= now]:
            _expire(self.futures.pop(cid, None), self.deadlines.pop(cid))
        for awaited in [future for future, entry in self.local.items() if entry[0] <= now]:
            _expire(awaited, self.local.pop(awaited))
        if self.deadlines or self.local:
            # sweep no more often than every 5 ms however spread the deadlines are
            earliest = min(entry[0] for entry in (*self.deadlines.values(), *self.local.values()))
            self._schedule_sweep(max(earliest, now + 0.005))


def _expire(future: asyncio.Future[EventEnvelope] | None, entry: Deadline) -> None:
    if future is not None and not future.done():
        _, route, timeout = entry
        future.set_exception(TimeoutError(f"Route {route} timeout for {timeout:g} s"))
