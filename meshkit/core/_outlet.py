"""The producer's side of an event stream: segments to the caller within its credit window.

The contract (markers, head control, credit and cancel): docs/protocol/streams.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from meshkit.core._codec import CodecError, pack
from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError
from meshkit.core._markers import (
    DATA,
    X_EVENT_STREAM,
    X_STREAM_RUN,
    X_STREAM_SEQ,
)

log = logging.getLogger("meshkit.streams")

#: a consumer's window when its request names none (segments on their way before it grants more)
DEFAULT_WINDOW = 4096
#: the bytes a stream may have on their way to its consumer, whatever the window (64 KB segments: 64)
DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024

#: the bytes of data a run of segments holds at most: with its envelope, within one 64 KB record
RUN_BYTES = 48 * 1024


class StreamCancelled(Exception):
    """The consumer stopped the stream (it stopped reading, left, or could not be reached)."""


class Outlet:
    """One stream being produced: what was sent, what the consumer has granted, and who it is.

    Send is the platform's dispatch (it raises AppError when the consumer cannot be reached); the segments
    go out in order, at most `window` segments and `window_bytes` bytes ahead of the consumer's credit.
    """

    __slots__ = (
        "_held",
        "_next",
        "_run",
        "_run_bytes",
        "_send",
        "_sizes",
        "_waiter",
        "bytes",
        "cancelled",
        "cid",
        "consumer",
        "idle",
        "route",
        "segments",
        "task",
        "trace_id",
        "trace_path",
        "window",
        "window_bytes",
    )

    def __init__(
        self,
        send: Callable[[EventEnvelope], None],
        request: EventEnvelope,
        route: str,
        *,
        window: int,
        window_bytes: int,
        idle: float,
        numbered: bool = False,
    ) -> None:
        """`numbered`: the reader is in another app, so each segment carries its number (X_STREAM_SEQ)."""
        self.consumer = request.reply_to
        self.cid = request.cid
        self.trace_id, self.trace_path = request.trace_id, request.trace_path
        self.route = route
        self.window = window
        self.window_bytes = window_bytes
        self.idle = idle  # the consumer's idle allowance: how long a producer waits for its credit
        self.segments = self.bytes = 0  # sent (data segments)
        self.cancelled: str | None = None  # why the consumer stopped the stream
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self._send = send
        self._next = 0 if numbered else -1  # the number of the next segment; -1: none are numbered
        # across the broker, plain data segments sent in one loop turn travel as one run (X_STREAM_RUN)
        self._run: list[Any] | None = [] if numbered else None
        self._run_bytes = 0
        self._sizes: deque[int] = deque()  # the size of each segment not yet credited
        self._held = 0  # their bytes
        self._waiter: asyncio.Future[None] | None = None

    # -- from the consumer -----------------------------------------------------------------------------
    def grant(self, segments: int) -> None:
        """The consumer took `segments` more: as many may follow."""
        segments = min(segments, len(self._sizes))
        for _ in range(segments):
            self._held -= self._sizes.popleft()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self, reason: str) -> None:
        """The consumer stopped the stream: the producer stops at its next step."""
        if self.cancelled is None:
            self.cancelled = reason
            log.debug("Stream %s of %s cancelled: %s", self.cid, self.route, reason)
            if self.task is not None and self.task is not asyncio.current_task():
                self.task.cancel()  # whatever the handler awaits now (a model, a sleep) ends with it

    # -- to the consumer -------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        """Data segments sent and not yet credited by the consumer."""
        return len(self._sizes)

    @property
    def open(self) -> bool:
        """Whether a data segment may go now: not cancelled, and the consumer less than a window behind."""
        return self.cancelled is None and len(self._sizes) < self.window and self._held < self.window_bytes

    async def data(self, body: Any, headers: dict[str, str] | None, status: int) -> None:
        """Send one data segment, after waiting for credit if the consumer is a window behind."""
        if self.cancelled is not None:
            raise StreamCancelled(self.cancelled)
        if len(self._sizes) >= self.window or self._held >= self.window_bytes:
            await self._credit()
        self.put(body, headers, status)

    def put(self, body: Any, headers: dict[str, str] | None, status: int) -> None:
        """Send one data segment now (the caller checked `open`)."""
        size = segment_size(body)
        run = self._run
        if run is not None and status == 200 and headers is not None and len(headers) == 1:
            if not run:  # the first of a run: it leaves at the end of this loop turn, or when full
                asyncio.get_running_loop().call_soon(self._send_run)
            run.append(body)
            self._run_bytes += size
            if self._run_bytes >= RUN_BYTES:
                self.flush()
        else:
            self.flush()
            self._emit(body, headers, status)
        self.segments += 1
        self.bytes += size
        self._sizes.append(size)
        self._held += size

    def end(self, headers: dict[str, str], body: Any, status: int, exception: str | None = None) -> None:
        """Send the terminal segment (`headers` mark it EOF or EXCEPTION): it never waits for credit."""
        if self.cancelled is None:
            try:
                self.flush()
                self._emit(body, headers, status, exception)
            except StreamCancelled:
                pass

    def flush(self) -> None:
        """Send the run of data segments held so far, if any, as one segment."""
        run = self._run
        if run:
            self._run, self._run_bytes = [], 0
            self._emit(run, {X_EVENT_STREAM: DATA, X_STREAM_RUN: str(len(run))}, 200)

    def _send_run(self) -> None:
        if self.cancelled is None:
            try:
                self.flush()
            except StreamCancelled:  # the reader is gone: the producer learns it at its next step
                pass

    async def _credit(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._sizes) >= self.window or self._held >= self.window_bytes:
            waiter = self._waiter = loop.create_future()
            try:
                async with asyncio.timeout(self.idle):
                    await waiter
            except TimeoutError:
                reason = f"the caller took no segment for {self.idle:g} s"
                raise StreamStalled(reason) from None
            finally:
                self._waiter = None
            if self.cancelled is not None:
                raise StreamCancelled(self.cancelled)

    def _emit(
        self, body: Any, headers: dict[str, str] | None, status: int, exception: str | None = None
    ) -> None:
        segment = EventEnvelope(
            self.consumer,
            body,
            headers,
            status=status,
            sender=self.route,
            cid=self.cid,
            exception=exception,
        )
        if self.trace_id is not None:
            segment.trace_id, segment.trace_path = self.trace_id, self.trace_path
        if self._next >= 0:  # across the broker: the reader can tell a segment lost or out of order
            segment.headers[X_STREAM_SEQ] = str(self._next)
            self._next += 1
        try:
            self._send(segment)
        except AppError as exc:  # its app left or cannot be reached: nobody reads the rest
            self.cancel(f"the caller cannot be reached: {exc.message}")
            raise StreamCancelled(self.cancelled) from exc


class StreamStalled(Exception):
    """The consumer granted no credit within its idle allowance."""


def segment_size(body: Any) -> int:
    """The bytes of a segment's data, as counted for the window and the metrics."""
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass"))
    if body is None:
        return 0
    try:
        return len(pack(body))
    except (CodecError, TypeError, ValueError):
        return 0
