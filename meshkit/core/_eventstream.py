"""The caller's side of an event stream: `async for segment in po.stream(...)`.

The contract (markers, idle allowance, credit and cancel): docs/protocol/streams.md.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError
from meshkit.core._markers import (
    CANCEL,
    CREDIT,
    DATA,
    EOF,
    EXCEPTION,
    X_EVENT_STREAM,
    X_STREAM_RUN,
    X_STREAM_SEQ,
    error_message,
    exception_segment,
    stream_signal,
)
from meshkit.core._outlet import segment_size

log = logging.getLogger("meshkit.streams")


class EventStream(ABC):
    """The segments of one stream, as they arrive: ``async for segment in po.stream("llm.tokens", q)``.

    Each is an EventEnvelope whose `body` is the segment's data, marked DATA in its `x-event-stream`
    header; the last is marked EOF (its body: the producer's trailing metadata, if any) or EXCEPTION (the
    stream failed: its status, and an error body). No segment within the idle allowance ends the stream
    with a 408 EXCEPTION. A function that does not stream yields its one reply. Stopping early (`break`,
    `aclose()`, leaving `async with`, cancellation) stops the producer.
    `data()` gives the data alone and raises AppError for a failed stream.
    """

    route: str | None = None
    idle: float = 10.0  # seconds allowed between segments (a relay takes the head's x-ttl, if any)

    def __aiter__(self) -> EventStream:
        return self

    @abstractmethod
    async def __anext__(self) -> EventEnvelope: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Stop reading: the producer stops too. Nothing happens for a stream that has ended."""

    async def within(self, wait: float | None) -> EventEnvelope | None:
        """The next segment; None if none arrives within `wait` seconds while the idle allowance still
        runs, so a relay can send a keep-alive meanwhile (this one always waits for the next)."""
        return await self.__anext__()

    def arrived(self) -> EventEnvelope | None:
        """The next segment if it has already arrived, without waiting; else None (a relay takes what
        is there at once, and writes it in one piece)."""
        return None

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def data(self) -> StreamData:
        """The data of the segments, in order; AppError(status, message) if the stream fails."""
        return StreamData(self)


class StreamData:
    """`stream.data()`: each data segment's body (a plain function's one reply body); raises on failure."""

    __slots__ = ("_stream",)

    def __init__(self, stream: EventStream) -> None:
        self._stream = stream

    def __aiter__(self) -> StreamData:
        return self

    async def __anext__(self) -> Any:
        while True:
            segment = await self._stream.__anext__()
            marker = stream_signal(segment)
            if marker == DATA:
                return segment.body
            if marker == EXCEPTION or segment.status >= 400:
                raise AppError(segment.status, error_message(segment))
            if marker is None:  # a function that does not stream: its reply is the one datum
                return segment.body
            if marker == EOF:
                raise StopAsyncIteration

    async def aclose(self) -> None:
        await self._stream.aclose()


Control = Callable[[str, int], None]


class Arrivals:
    """What has arrived for one stream and not been read yet: the platform holds this, not the stream, so
    a stream dropped unread (`break`) is collected at once, and stops its producer."""

    __slots__ = ("_control", "cid", "done", "queue", "route", "waiter", "window", "window_bytes")

    def __init__(self, cid: str, route: str | None, window: int, window_bytes: int, control: Control) -> None:
        self.cid, self.route, self.window, self.window_bytes = cid, route, window, window_bytes
        self.queue: deque[EventEnvelope] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.done = False  # the terminal was read, or the reader stopped
        self._control = control

    def push(self, segment: EventEnvelope) -> None:
        """A segment arrived (the platform calls this on the loop)."""
        if self.done:
            return
        queue = self.queue
        if len(queue) >= 4 * self.window + 16:  # a producer that ignores the window: stop it here
            log.warning("Stream %s from %s: the producer ignored the credit window", self.cid, self.route)
            queue.clear()
            queue.append(exception_segment(502, f"Route {self.route}: the producer ignored the window"))
            self._control(CANCEL, 0)
        else:
            queue.append(segment)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, status: int, message: str, exception: str | None = None) -> None:
        """End the stream in-band (its producer left, the platform stops): after what already arrived."""
        self.push(exception_segment(status, message, cid=self.cid, exception=exception))


class LocalStream(EventStream):
    """A stream whose segments arrive on this platform's bus (from a local function or across the mesh).

    The platform pushes segments in as they arrive; this grants the producer credit as they are read, and
    tells it to stop when the reader stops early.
    """

    __slots__ = (
        "_arrivals",
        "_caller_cid",
        "_control",
        "_credited",
        "_expected",
        "_forget",
        "_idle_until",
        "_loop",
        "_streaming",
        "_taken",
        "_taken_bytes",
        "idle",
        "route",
    )

    def __init__(
        self,
        arrivals: Arrivals,
        *,
        idle: float,
        control: Control,
        forget: Callable[[str], None],
        caller_cid: str | None,
    ) -> None:
        self.route = arrivals.route
        self.idle = idle
        self._arrivals = arrivals
        self._caller_cid = caller_cid
        self._control = control  # sends CREDIT or CANCEL to the producer
        self._forget = forget  # the platform stops routing this stream's segments here
        self._loop = asyncio.get_running_loop()
        self._streaming = False  # a segment has been read: an unmarked envelope now is a failure
        self._taken = 0  # data segments read and not yet credited
        self._taken_bytes = 0  # ... and their bytes, counted as the producer counts them
        self._idle_until: float | None = None  # when the wait for the next segment began, + idle
        self._expected = 0  # the number the next numbered segment must carry
        self._credited = False  # credit was just granted

    @property
    def cid(self) -> str:
        """The stream's cid now: a stream sent again to another instance gets a new one (streamhub)."""
        return self._arrivals.cid

    async def __anext__(self) -> EventEnvelope:
        segment = await self.within(None)
        assert segment is not None  # with no bound of its own, it waits until the idle allowance ends
        return segment

    def arrived(self) -> EventEnvelope | None:
        arrivals = self._arrivals
        while arrivals.queue and not arrivals.done:
            segment = self._take(arrivals.queue.popleft())
            if segment is not None:
                return segment
        return None

    async def within(self, wait: float | None) -> EventEnvelope | None:
        """The next segment; None if none arrives within `wait` seconds though the idle allowance still
        runs (a relay sends a keep-alive meanwhile)."""
        arrivals = self._arrivals
        if arrivals.done:
            raise StopAsyncIteration
        queue = arrivals.queue
        if not queue:
            loop = self._loop
            if self._idle_until is None:
                self._idle_until = loop.time() + self.idle
            left = self._idle_until - loop.time()
            waiter = arrivals.waiter = loop.create_future()
            try:
                async with asyncio.timeout(left if wait is None or wait >= left else wait):
                    await waiter
            except TimeoutError:
                if wait is not None and loop.time() < self._idle_until:
                    return None
                self._finish(cancel=True)
                message = f"Route {self.route}: no segment within {self.idle:g} s"
                return exception_segment(408, message, cid=self._caller_cid, sender=self.route)
            except BaseException:  # cancelled while waiting: the producer stops too
                self._finish(cancel=True)
                raise
            finally:
                arrivals.waiter = None
        segment = self._take(queue.popleft())
        if self._credited:  # let the loop run, so the credit leaves now, not after a window's reading
            self._credited = False
            await asyncio.sleep(0)
        return segment if segment is not None else await self.within(wait)

    def _take(self, segment: EventEnvelope) -> EventEnvelope | None:
        """What the reader gets for the segment that arrived next (None: one to skip)."""
        self._idle_until = None
        segment.cid = self._caller_cid
        number = segment.headers.pop(X_STREAM_SEQ, None)
        if number is not None:
            if number != str(self._expected):  # a segment lost or out of order on the way: say so
                message = f"Route {self.route}: segment {self._expected} lost on the way (got {number!r})"
                log.warning("Stream %s: %s", self.cid, message)
                self._finish(cancel=True)
                return exception_segment(502, message, cid=self._caller_cid, sender=self.route)
            self._expected += 1
            run = segment.headers.pop(X_STREAM_RUN, None)
            if run is not None:
                segment = self._unpack(segment, run)
        marker = stream_signal(segment)
        if marker == DATA:
            self._streaming = True
            self._taken += 1
            self._taken_bytes += segment_size(segment.body)
            arrivals = self._arrivals
            # credit in quarters of either bound, so the producer never waits a whole trip for it
            if self._taken * 4 >= arrivals.window or self._taken_bytes * 4 >= arrivals.window_bytes:
                self._control(CREDIT, self._taken)
                self._taken = self._taken_bytes = 0
                self._credited = True
            return segment
        if marker is None:
            if self._streaming:  # the bus's error reply mid-stream: a failure, in-band
                status = segment.status if segment.status >= 400 else 500
                segment = exception_segment(status, error_message(segment), cid=self._caller_cid)
        elif marker != EOF and marker != EXCEPTION:
            log.warning("Stream %s from %s: dropped a segment marked %r", self.cid, self.route, marker)
            return None
        self._finish(cancel=False)
        return segment

    def _unpack(self, segment: EventEnvelope, run: str) -> EventEnvelope:
        """A run of data segments: the first now, the others next in line."""
        bodies = segment.body
        if not isinstance(bodies, list) or not bodies or run != str(len(bodies)):
            message = f"Route {self.route}: a run of segments that does not hold {run!r} of them"
            log.warning("Stream %s: %s", self.cid, message)
            return exception_segment(502, message, cid=self._caller_cid, sender=self.route)
        route, cid, queue = segment.sender, self._caller_cid, self._arrivals.queue
        trace_id, trace_path = segment.trace_id, segment.trace_path
        for body in reversed(bodies[1:]):
            child = EventEnvelope(None, body, {X_EVENT_STREAM: DATA}, sender=route, cid=cid)
            if trace_id is not None:
                child.trace_id, child.trace_path = trace_id, trace_path
            queue.appendleft(child)
        segment.body = bodies[0]
        return segment

    async def aclose(self) -> None:
        self._finish(cancel=True)

    def _finish(self, *, cancel: bool) -> None:
        arrivals = self._arrivals
        if arrivals.done:
            return
        arrivals.done = True
        arrivals.queue.clear()
        if cancel:  # before forgetting: the platform knows where the producer is until then
            self._control(CANCEL, 0)
        self._forget(self.cid)

    def __del__(self) -> None:
        # dropped unfinished (a `break` out of `async for`): stop the producer, from the loop's thread
        if not self._arrivals.done:
            self._arrivals.done = True
            try:
                self._loop.call_soon_threadsafe(_abandoned, self._forget, self._control, self.cid)
            except RuntimeError:  # the loop is closed: nothing is producing any more
                pass


def _abandoned(forget: Callable[[str], None], control: Control, cid: str) -> None:
    control(CANCEL, 0)
    forget(cid)
