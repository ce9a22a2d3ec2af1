"""Event streams over HTTP, the callee's side: `/api/event` answers a streaming function with Server-Sent
Events in the engines' dialect, and `sse_response` relays any stream to a plain SSE client.

The dialect: docs/protocol/streams.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from starlette.responses import JSONResponse, Response, StreamingResponse

from meshkit.core import (
    DATA,
    EXCEPTION,
    TEXT_EVENT_STREAM,
    X_TTL,
    EventEnvelope,
    EventStream,
    Platform,
    error_body,
    error_message,
    stream_signal,
)
from meshkit.http._sse import PING, data_frame, envelope_frame, text_frame

log = logging.getLogger("meshkit.http")

#: seconds between keep-alive comments while a producer is quiet (`stream.keep.alive`, the engines' 30 s)
DEFAULT_KEEP_ALIVE = 30.0
#: what proxies must not do to a stream: buffer it (nginx reads X-Accel-Buffering), or cache it
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
#: the segments already there when a write begins go in it, up to this many bytes
COALESCE_BYTES = 64 * 1024


def streams(platform: Platform, route: str) -> bool:
    """Whether `route` is a public streaming function of this app (Event over HTTP reaches no other)."""
    pool = platform.pool(route.partition("@")[0] if route.endswith("@" + platform.origin) else route)
    return pool is not None and pool.spec.streaming and not pool.spec.private


async def relay(platform: Platform, event: EventEnvelope, idle: float) -> StreamingResponse | EventEnvelope:
    """Open the stream, wait for its head and answer with the envelope dialect; an unmarked first envelope
    (the function refused before it streamed: a full queue, a body its model refuses) comes back as is."""
    stream = platform.stream(event, idle, external=True)
    first = await stream.__anext__()
    if stream_signal(first) is None:
        return first
    allowance = first.headers.get(X_TTL)  # the producer's own idle allowance for what follows, in seconds
    if allowance is not None and allowance.strip().isdigit() and int(allowance) > 0:
        stream.idle = float(int(allowance))
    keep_alive = platform.config.get_float("stream.keep.alive", DEFAULT_KEEP_ALIVE)
    return StreamingResponse(
        _chunks(stream, first, keep_alive, _dialect()),
        status_code=first.status if 200 <= first.status <= 599 else 500,
        media_type=TEXT_EVENT_STREAM,
        headers=SSE_HEADERS,
    )


def _dialect() -> Callable[[EventEnvelope], bytes]:
    """The engines' dialect: the head and the terminals as envelope frames, text segments raw."""
    head = True

    def render(segment: EventEnvelope) -> bytes:
        nonlocal head
        first, head = head, False
        return data_frame(segment, first) if stream_signal(segment) == DATA else envelope_frame(segment)

    return render


async def _chunks(
    stream: EventStream, first: EventEnvelope, keep_alive: float, render: Callable[[EventEnvelope], bytes]
) -> AsyncIterator[bytes]:
    """The stream's frames, from `first` to its end: what has arrived already goes in one write (one chunk,
    one send), a keep-alive every `keep_alive` seconds it is quiet. The client going away cancels this
    (Starlette) or closes it (garbage collection): the stream's aclose in `finally` stops the producer."""
    wait = keep_alive if keep_alive > 0 else None
    segment: EventEnvelope | None = first
    try:
        while True:
            if segment is None:
                segment = await stream.within(wait)
                if segment is None:
                    yield PING
                    continue
            frames: list[bytes] = []
            size = 0
            while segment is not None:
                frame = render(segment)
                frames.append(frame)
                size += len(frame)
                if stream_signal(segment) != DATA:
                    yield b"".join(frames)
                    return
                segment = stream.arrived() if size < COALESCE_BYTES else None
            yield b"".join(frames)
    except StopAsyncIteration:
        return
    finally:
        await stream.aclose()


async def sse_response(
    stream: EventStream,
    *,
    keep_alive: float = 15.0,
    render: Callable[[EventEnvelope], bytes] = text_frame,
) -> Response:
    """A stream as a plain Server-Sent Events response for browsers and HTTP clients: each data segment as
    `data:` lines (text as is, other data as JSON, a named segment under its `event:`), a failure as an
    `event: error` with the engines' error body, then the end of the response::

        @app.get("/api/tokens")
        async def tokens(text: str) -> Response:
            return await sse_response(PostOffice().stream("llm.tokens", {"text": text}))

    It waits for the first segment: a stream that fails before any data (an unknown route, a refused
    body, no segment in time) is answered with its status and the JSON error body instead. A `: ping`
    comment goes out every `keep_alive` seconds the stream is quiet (0: never). The client disconnecting
    stops the stream, and so its producer.
    """
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        return JSONResponse(error_body(502, "The stream had ended"), status_code=502)
    marker = stream_signal(first)
    if first.status >= 400 and (marker is None or marker == EXCEPTION):
        await stream.aclose()
        message = error_message(first)
        log.warning("Stream %s failed before it began: %d %s", stream.route, first.status, message)
        return JSONResponse(error_body(first.status, message), status_code=first.status)
    return StreamingResponse(
        _chunks(stream, first, keep_alive, render),
        status_code=200,
        media_type=TEXT_EVENT_STREAM,
        headers=SSE_HEADERS,
    )
