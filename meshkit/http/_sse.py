"""The Server-Sent Events dialect of a stream over Event over HTTP, the Mercury engines' own: envelope frames
(the SSE event name ``envelope``, one base64-encoded envelope each) for the head, the terminals and any
segment a plain frame would not carry losslessly, and raw SSE frames for plain text segments; a parser for
it that is incremental and bounded, and plain ``data:`` frames for browsers and curl. The contract, and the
engines' multi-shot reply it carries: docs/protocol/streams.md.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from meshkit.core import (
    DATA,
    ENVELOPE,
    EOF,
    EXCEPTION,
    X_EVENT_NAME,
    X_EVENT_STREAM,
    X_TTL,
    CodecError,
    EventEnvelope,
    decode,
    encode,
    error_body,
    error_message,
    exception_segment,
    stream_signal,
    to_plain,
)

log = logging.getLogger("meshkit.http.sse")

#: the keep-alive comment a producer sends while it is quiet (parsers drop comments)
PING = b": ping\n\n"

# headers a raw frame may carry: its marker and name ride the frame, x-ttl means something on the head only
_RAW_HEADERS = frozenset((X_EVENT_STREAM, X_EVENT_NAME, X_TTL))
_BOM = b"\xef\xbb\xbf"
MALFORMED = "Invalid event stream - malformed envelope frame"  # the engines' words
MISSING_HEAD = "Invalid event stream - missing envelope head"

Event = tuple[str | None, str]


class SseError(Exception):
    """An event stream whose line or event data outgrows the parser's limit (the stream is to be dropped).

    `events`: those the failing feed had completed before it (still the stream's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events: list[Event] = []


# -- rendering ---------------------------------------------------------------------------------------------


def sse_frame(event_name: str | None, text: str) -> bytes:
    """One SSE frame: an ``event:`` line when named, one ``data:`` line per line of `text`, a blank line."""
    head = f"event: {event_name}\n" if event_name else ""
    return (head + "data: " + text.replace("\n", "\ndata: ") + "\n\n").encode()


def envelope_frame(event: EventEnvelope) -> bytes:
    """The envelope as an ``envelope`` frame, its addressing cleared (the consuming relay sets its own)."""
    clone = event.copy()
    clone.to = clone.reply_to = None
    return b"event: envelope\ndata: " + base64.b64encode(encode(clone)) + b"\n\n"


def raw_streamable(event: EventEnvelope) -> bool:
    """Whether a raw frame carries this DATA segment losslessly: status 200, no headers but the marker, a
    name and x-ttl, a one-line name that is not ``envelope``, a str (or None) body with no CR (SSE turns
    every line ending into LF)."""
    headers = event.headers
    if event.status != 200 or headers.get(X_EVENT_STREAM) != DATA or not _RAW_HEADERS.issuperset(headers):
        return False
    name = headers.get(X_EVENT_NAME)
    # stricter than the engines: an empty name would vanish and a line break would split the frame
    if name is not None and (name in ("", ENVELOPE) or "\n" in name or "\r" in name):
        return False
    body = event.body
    return body is None or (isinstance(body, str) and "\r" not in body)


def data_frame(event: EventEnvelope, first: bool) -> bytes:
    """A segment's frame: the first of a stream (the head) and anything not raw-streamable as an envelope
    frame; a raw one otherwise, nothing for a None body. CodecError for a body that cannot be encoded."""
    if first or not raw_streamable(event):
        return envelope_frame(event)
    if event.body is None:
        return b""
    try:
        return sse_frame(event.headers.get(X_EVENT_NAME), event.body)
    except UnicodeEncodeError:  # a lone surrogate: let the codec refuse it in its own words
        return envelope_frame(event)


def text_frame(event: EventEnvelope) -> bytes:
    """A plain SSE frame for a browser or curl: a DATA segment (or a successful reply) as ``data:`` lines of
    its body, a failure as ``event: error`` with the engines' error body, an EOF with a body as
    ``event: eof``. CodecError for a body that is not plain data."""
    marker = stream_signal(event)
    if marker == DATA or (marker is None and event.status < 400):
        text = _body_text(event.body)
        if text is None:
            return b""
        name = event.headers.get(X_EVENT_NAME)
        return _plain_frame(None if name is None else " ".join(name.splitlines()), text)
    if marker == EXCEPTION or marker is None:
        return _plain_frame("error", _json(error_body(event.status, error_message(event))))
    if marker == EOF and event.body is not None:
        return _plain_frame("eof", _json(event.body))
    return b""  # an EOF without metadata, or a marker the engines do not know: nothing to show


def _body_text(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", errors="replace")
    if isinstance(body, str):  # SSE has no CR in a value: every line ending becomes one LF
        return body.replace("\r\n", "\n").replace("\r", "\n") if "\r" in body else body
    return _json(body)


def _json(value: Any) -> str:
    plain = to_plain(value)  # CodecError for what is not plain data
    try:
        return json.dumps(plain, separators=(",", ":"), default=_json_bytes)
    except (TypeError, ValueError) as exc:  # a bytes key, say
        raise CodecError(f"cannot render an event body as JSON: {exc}") from exc


def _json_bytes(value: Any) -> str:
    if isinstance(value, bytes):  # the same as a bytes body: its text, UTF-8 with replacement
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _plain_frame(name: str | None, text: str) -> bytes:
    try:
        return sse_frame(name, text)
    except UnicodeEncodeError:  # a lone surrogate: a viewer gets '?' rather than no frame at all
        return sse_frame(name, text.encode("utf-8", "replace").decode("utf-8"))


# -- parsing -----------------------------------------------------------------------------------------------


class SseParser:
    """An incremental SSE parser (the WHATWG rules): feed it the body's chunks, get the completed events.

    Lines end in LF, CRLF or CR; one space after the colon is dropped; comments, ``id``, ``retry`` and unknown
    fields are ignored; an event's ``data`` lines are joined with LF and decoded as UTF-8 with replacement.
    An event still open when the stream ends is dropped, as the spec says. A line, or an event's data, longer
    than `max_frame_bytes` raises SseError, and so does every feed after it.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._pending = bytearray()  # the line not yet ended
        self._data: list[bytes] = []
        self._size = 0  # the event's data so far, in bytes, the LFs that will join them included
        self._name: str | None = None
        self._skip_lf = False  # the last chunk ended in CR: a LF that starts the next one ends no line
        self._first_line = True  # only the stream's first line may start with a BOM
        self._failed = False

    def feed(self, chunk: bytes) -> list[Event]:
        if self._failed:
            raise SseError("the event stream already went past its limit")
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if 0x0A not in chunk and 0x0D not in chunk:  # no line ends here (one byte at a time, say)
            self._pending += chunk
            if len(self._pending) > self._max:
                self._check_pending()
            return []
        buffer = bytes(self._pending) + chunk if self._pending else chunk
        lines = buffer.splitlines()  # bytes split at LF, CRLF and CR only (unlike str.splitlines)
        last = buffer[-1]
        self._skip_lf = last == 0x0D
        self._pending = bytearray(lines.pop() if last not in (0x0A, 0x0D) else b"")
        events: list[Event] = []
        try:
            for line in lines:
                self._line(line, events)
            self._check_pending()
        except SseError as exc:
            self._failed = True
            exc.events = events
            raise
        return events

    def _check_pending(self) -> None:
        if len(self._pending) > self._max:
            self._failed = True
            raise SseError(f"an event stream line is longer than {self._max} bytes")

    def _line(self, line: bytes, events: list[Event]) -> None:
        if len(line) > self._max:  # measured before the BOM goes, as an unended line is
            raise SseError(f"an event stream line is longer than {self._max} bytes")
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[3:]
        if not line:  # dispatch; a blank line without data resets the name all the same
            if self._data:
                events.append((self._name, b"\n".join(self._data).decode("utf-8", errors="replace")))
                self._data, self._size = [], 0
            self._name = None
            return
        if line[0] == 0x3A:  # a comment (a keep-alive ping)
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._size += len(value) + (1 if self._data else 0)
            if self._size > self._max:
                raise SseError(f"an event's data is longer than {self._max} bytes")
            self._data.append(value)
        elif field == b"event":
            self._name = value.decode("utf-8", errors="replace") or None  # empty: the default, unnamed


# -- decoding ----------------------------------------------------------------------------------------------


def decode_frame(name: str | None, text: str, head_seen: bool, cid: str | None) -> tuple[EventEnvelope, bool]:
    """One parsed frame -> (envelope, terminal). An ``envelope`` frame is decoded, its addressing cleared and
    `cid` set when given; a raw frame after the head is a DATA segment. A malformed envelope frame, or a raw
    frame before the head, is an in-band EXCEPTION segment (status 500) that ends the stream."""
    if name == ENVELOPE:
        try:
            event = decode(base64.b64decode(text, validate=True))
        except ValueError as exc:  # binascii.Error, non-ASCII text and CodecError are all ValueErrors
            log.warning("%s: %s", MALFORMED, exc)
            return exception_segment(500, MALFORMED, cid=cid), True
        event.to = event.reply_to = None
        if cid is not None:
            event.cid = cid
        return event, stream_signal(event) in (EOF, EXCEPTION)
    if not head_seen:
        log.warning("%s: the first frame is %s", MISSING_HEAD, f"named {name!r}" if name else "a raw one")
        return exception_segment(500, MISSING_HEAD, cid=cid), True
    headers = {X_EVENT_STREAM: DATA, X_EVENT_NAME: name} if name else {X_EVENT_STREAM: DATA}
    return EventEnvelope(None, text, headers, cid=cid), False
