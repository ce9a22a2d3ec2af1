"""What a streaming function writes its segments with, in the engines' style (docs/protocol/streams.md)."""

from __future__ import annotations

import logging
from typing import Any

from meshkit.core._codec import PLAIN, to_plain
from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError
from meshkit.core._markers import DATA, EOF, EXCEPTION, X_EVENT_NAME, X_EVENT_STREAM, X_TTL, error_body
from meshkit.core._outlet import Outlet

log = logging.getLogger("meshkit.streams")


class EventStreamWriter:
    """What a streaming function writes its segments with, in the engines' style::

        @route("report.lines")
        async def lines(body: dict, out: EventStreamWriter) -> None:
            out.first(200, "text/plain")
            await out.write("one")
            await out.write_named("progress", {"done": 1})
            await out.close({"lines": 1})     # or: await out.fail(error)

    Each write waits while the caller is a window behind (backpressure) and raises StreamCancelled once the
    caller has stopped the stream. A function that returns without closing ends its stream with EOF; one
    that raises ends it in-band with the error's status. Writes after the end are dropped.
    """

    __slots__ = ("_closed", "_content_type", "_head_sent", "_outlet", "_status", "_ttl")

    def __init__(self, outlet: Outlet) -> None:
        self._outlet = outlet
        self._status = 200
        self._content_type: str | None = None
        self._ttl: int | None = None
        self._head_sent = False
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cancelled(self) -> bool:
        """Whether the caller has stopped the stream."""
        return self._outlet.cancelled is not None

    def first(self, status: int, content_type: str, ttl_seconds: int | None = None) -> EventStreamWriter:
        """The head the first segment carries: its status, content type and, optionally, the idle allowance
        in seconds an HTTP relay gives the segments after it (the engines' head control)."""
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status!r}")
        self._status, self._content_type = status, content_type
        if ttl_seconds is not None:
            self._ttl = int(ttl_seconds)
        return self

    async def write(self, segment: Any) -> None:
        """Send one data segment: text, bytes, a dict, a list, a model, or an EventEnvelope (its body,
        headers and status)."""
        await self._write(segment, None)

    async def write_named(self, event_name: str, segment: Any) -> None:
        """Send one data segment with a name (the SSE `event:` field)."""
        await self._write(segment, event_name)

    async def close(self, trailing_metadata: Any = None) -> None:
        """End the stream (EOF), with optional metadata for the caller."""
        if not self._closed:
            self._closed = True
            status = 200
            if self._head_sent:
                headers = {X_EVENT_STREAM: EOF}
            else:  # a stream with no data: the head rides its end
                self._head_sent = True
                headers, status = self._head(), self._status
                headers[X_EVENT_STREAM] = EOF
            self._outlet.end(headers, _plain(trailing_metadata), status)

    async def fail(self, error: BaseException | str, status: int = 500) -> None:
        """End the stream in-band with an error: an AppError's status, else `status`."""
        kind: str | None
        if isinstance(error, AppError):
            status, message, kind = error.status, error.message, "AppError"
        else:
            message = error if isinstance(error, str) else (str(error) or type(error).__name__)
            kind = None if isinstance(error, str) else type(error).__name__
        self.failed(status, message, kind)

    def failed(self, status: int, message: str, kind: str | None = None) -> None:
        """End the stream in-band with `status` (500 if it is not an error) and `message`."""
        if self._closed:
            return
        self._closed = True
        status = status if status >= 400 else 500
        self._outlet.end({X_EVENT_STREAM: EXCEPTION}, error_body(status, message), status, kind)

    def _head(self) -> dict[str, str]:
        headers = {X_EVENT_STREAM: DATA}
        if self._content_type:
            headers["content-type"] = self._content_type
        if self._ttl is not None and self._ttl > 0:
            headers[X_TTL] = str(self._ttl)
        return headers

    async def _write(self, segment: Any, name: str | None) -> None:
        if self._closed:
            log.debug("Segment of %s dropped: the stream has ended", self._outlet.route)
            return
        await self._outlet.data(*self._segment(segment, name))

    def put(self, segment: Any) -> None:
        """Send one data segment now: the caller checked that the outlet is `open` (a generator's items)."""
        if self._closed:
            log.debug("Segment of %s dropped: the stream has ended", self._outlet.route)
            return
        self._outlet.put(*self._segment(segment, None))

    def _segment(self, segment: Any, name: str | None) -> tuple[Any, dict[str, str], int]:
        status = 200
        if type(segment) is EventEnvelope:
            headers = dict(segment.headers)
            status, segment = segment.status, segment.body
        else:
            if self._head_sent:  # the usual segment: its marker alone
                headers = {X_EVENT_STREAM: DATA}
                if name:
                    headers[X_EVENT_NAME] = name
                return _plain(segment), headers, 200
            headers = {}
        if not self._head_sent:
            self._head_sent = True
            headers.update(self._head())
            if status == 200:
                status = self._status
        else:
            headers[X_EVENT_STREAM] = DATA
        if name:
            headers[X_EVENT_NAME] = name
        return _plain(segment), headers, status


def _plain(body: Any) -> Any:
    return body if isinstance(body, PLAIN) else to_plain(body)
