"""Event streams over HTTP, the caller's side: read a peer's Server-Sent Events (the engines' dialect) as
an EventStream. The dialect: docs/protocol/streams.md."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from meshkit.core import (
    DATA,
    EOF,
    EXCEPTION,
    TEXT_EVENT_STREAM,
    CodecError,
    EventEnvelope,
    EventStream,
    decode,
    encode,
    error_message,
    exception_segment,
    stream_signal,
)
from meshkit.http._sse import SseError, SseParser, decode_frame
from meshkit.observe import trace_headers
from meshkit.security import tls_failure

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("meshkit.http")


class HttpStream(EventStream):
    """A stream read from a peer's `/api/event`: the POST goes out on the first read."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        event: EventEnvelope,
        idle: float,
        max_frame_bytes: int,
    ) -> None:
        self.route = event.to
        self._session = session
        self._endpoint = endpoint
        self._event = event
        self.idle = idle
        self._parser = SseParser(max_frame_bytes)
        self._response: aiohttp.ClientResponse | None = None
        self._ready: deque[EventEnvelope] = deque()
        self._head_seen = False
        self._complete = False  # the terminal segment has arrived
        self._done = False  # ... and been read, or the reader stopped

    async def __anext__(self) -> EventEnvelope:
        if self._done:
            raise StopAsyncIteration
        if self._ready:
            return self._take(self._ready.popleft())
        import aiohttp  # loaded with the session that made this stream

        try:
            if self._response is None:
                async with asyncio.timeout(self.idle):
                    single = await self._open()
                if single is not None:
                    return self._end(single)
                if self._ready:
                    return self._take(self._ready.popleft())
            response = self._response
            assert response is not None
            while not self._ready:
                # the idle allowance runs from the last byte, a keep-alive's too (the engines' sock_read)
                async with asyncio.timeout(self.idle):
                    chunk = await response.content.readany()
                if not chunk:  # the dialect ends with a terminal segment: this was cut short
                    return self._end(self._failure(502, "the event stream ended without its end"))
                self._feed(chunk)
        except TimeoutError:
            return self._end(self._failure(408, f"no segment within {self.idle:g} s"))
        except aiohttp.ClientError as exc:
            self._salvage(self._response)
            if not self._complete:
                tls = tls_failure(exc)
                why = f"TLS handshake failed: {tls}" if tls else str(exc)
                self._end_with(self._failure(503, f"unable to read {self._endpoint}: {why}"))
        except BaseException:  # cancelled: the connection goes, and the producer stops with it
            self._close()
            raise
        return self._take(self._ready.popleft())

    async def aclose(self) -> None:
        self._close()

    def __del__(self) -> None:
        if not self._done:
            self._close()

    # -- the exchange ----------------------------------------------------------------------------------
    async def _open(self) -> EventEnvelope | None:
        """POST the request; None when the answer is a stream, else its one (maybe refused) reply."""
        event = self._event
        headers = {
            "content-type": "application/octet-stream",
            "accept": TEXT_EVENT_STREAM,
            "x-ttl": str(max(1000, int(self.idle * 1000))),
        }
        headers.update(trace_headers(event))
        response = self._response = await self._session.post(
            self._endpoint, data=encode(event), headers=headers
        )
        if response.content_type == TEXT_EVENT_STREAM:
            return None
        data = await response.read()
        status = response.status
        try:
            reply = decode(data)
        except CodecError as exc:
            return self._failure(
                502, f"{self._endpoint} answered HTTP {status} without an event envelope: {exc}"
            )
        if status != 200 and reply.status < 400:
            reply.status = status
        reply.to = reply.reply_to = None
        return reply

    def _feed(self, chunk: bytes) -> None:
        try:
            frames = self._parser.feed(chunk)
        except SseError as exc:  # what came before the bad line is still the stream's
            self._frames(exc.events)
            if not self._complete:
                self._end_with(self._failure(502, f"invalid event stream: {exc}"))
            return
        self._frames(frames)

    def _frames(self, frames: list[tuple[str | None, str]]) -> None:
        for name, text in frames:
            segment, terminal = decode_frame(name, text, self._head_seen, self._event.cid)
            marker = stream_signal(segment)
            if marker is None:  # not a segment: a failure mid-stream, with its status; as the head, invalid
                if self._head_seen:
                    status = segment.status if segment.status >= 400 else 500
                    segment = exception_segment(status, error_message(segment), cid=self._event.cid)
                else:
                    segment = self._failure(500, "invalid event stream: its head is not a segment")
                terminal = True
            elif marker not in (DATA, EOF, EXCEPTION):
                log.warning(
                    "Stream of %s from %s: dropped a segment marked %r", self.route, self._endpoint, marker
                )
                continue
            self._head_seen = True
            self._ready.append(segment)
            if terminal:  # frames after the end are not the stream's
                self._complete = True
                self._close_connection()
                return

    def _end_with(self, segment: EventEnvelope) -> None:
        """The stream ends with `segment`, after what is ready already."""
        self._ready.append(segment)
        self._complete = True
        self._close_connection()

    def _salvage(self, response: aiohttp.ClientResponse | None) -> None:
        # aiohttp raises a broken connection's error before the bytes it had already received: take those
        buffered = getattr(response.content, "_buffer", None) if response is not None else None
        if buffered:
            data = b"".join(bytes(piece) for piece in buffered)
            buffered.clear()
            self._feed(data)

    def _take(self, segment: EventEnvelope) -> EventEnvelope:
        if self._complete and not self._ready:
            self._done = True
        return segment

    def _failure(self, status: int, message: str) -> EventEnvelope:
        log.warning("Stream of %s from %s: %s", self.route, self._endpoint, message)
        return exception_segment(
            status, f"Route {self.route} at {self._endpoint}: {message}", cid=self._event.cid
        )

    def _end(self, segment: EventEnvelope) -> EventEnvelope:
        self._close()
        return segment

    def _close(self) -> None:
        self._done = True
        self._ready.clear()
        self._close_connection()

    def _close_connection(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()  # unread: the connection is dropped, and the peer's producer stops
