"""The event-stream vocabulary on envelopes: markers, head controls and meshkit's flow control headers.

The contract (the engines' multi-shot reply, and meshkit's credit window): docs/protocol/streams.md.
"""

from __future__ import annotations

from typing import Any

from meshkit.core._envelope import EventEnvelope

#: on every segment of a stream: DATA, then one EOF or EXCEPTION that ends it (the engines' header)
X_EVENT_STREAM = "x-event-stream"
#: optional on a DATA segment: its name (the SSE `event:` field)
X_EVENT_NAME = "x-event-name"
DATA = "data"
EOF = "eof"
EXCEPTION = "exception"
#: the SSE event name of a frame that carries one base64-encoded envelope
ENVELOPE = "envelope"
#: on the head segment: the producer's idle allowance between segments, in seconds (the engines' head control)
X_TTL = "x-ttl"
TEXT_EVENT_STREAM = "text/event-stream"
#: the engines' words for a caller that asked for one reply from a function that streams (status 406)
STREAM_CALLER_REQUIRED = "Streaming function requires a caller that accepts text/event-stream"

#: on a stream request (meshkit): the segments the caller takes before it grants more credit
X_STREAM_WINDOW = "x-stream-window"
#: on a stream request (meshkit): the bytes of data the caller takes before it grants more credit
X_STREAM_WINDOW_BYTES = "x-stream-window-bytes"
#: on a stream request (meshkit): the caller's idle allowance between segments, in milliseconds
X_STREAM_IDLE = "x-stream-idle"
#: on a segment to a reader in another app (meshkit): its number in the stream, from 0, terminal included
X_STREAM_SEQ = "x-stream-seq"
#: on a data segment to a reader in another app (meshkit): its body is the bodies of this many data
#: segments sent in one loop turn, as a list (one record for them all, not one each)
X_STREAM_RUN = "x-stream-run"
#: on a control event from the caller to the producer (meshkit): CREDIT (body: segments) or CANCEL
X_STREAM_CONTROL = "x-stream-control"
CREDIT = "credit"
CANCEL = "cancel"


def stream_signal(event: EventEnvelope) -> str | None:
    """The segment's marker (DATA, EOF, EXCEPTION), or None for an envelope that is not a segment."""
    marker = event.headers.get(X_EVENT_STREAM)
    if marker is None:
        for key, value in event.headers.items():  # the engines match it case-insensitively
            if key.lower() == X_EVENT_STREAM:
                marker = value
                break
        else:
            return None
    return marker.lower()


def error_body(status: int, message: str) -> dict[str, Any]:
    """The engines' in-band error: ``{"type": "error", "status": n, "message": text}``."""
    return {"type": "error", "status": status, "message": message}


def exception_segment(
    status: int,
    message: str,
    *,
    to: str | None = None,
    cid: str | None = None,
    sender: str | None = None,
    exception: str | None = None,
) -> EventEnvelope:
    """The terminal segment of a stream that failed: its status, and the engines' error body."""
    return EventEnvelope(
        to,
        error_body(status, message),
        {X_EVENT_STREAM: EXCEPTION},
        status=status,
        cid=cid,
        sender=sender,
        exception=exception,
    )


def error_message(event: EventEnvelope) -> str:
    """The text of a failed segment or reply: the error body's message, or the body itself."""
    body = event.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
    return event.error_message()
