"""EventEnvelope: the one message type of the event bus, the mesh and Event over HTTP.

Its fields and their wire form: docs/protocol/envelope.md.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

# Unique within the process and cheap: a random prefix and a counter (uuid4 costs ~2 us per event).
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def new_event_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):x}"


class _LazyId:
    """An event's id, drawn when first read: most in-process events are never asked for theirs.

    A non-data descriptor: once drawn (or set) the id is a plain instance attribute, read as fast as any."""

    def __get__(self, event: EventEnvelope | None, owner: type[EventEnvelope]) -> str:
        if event is None:  # the class itself: FIELDS and dataclass-like tools look it up
            return ""
        # setdefault, one step under the GIL: two threads drawing at once both get the one that was kept
        return event.__dict__.setdefault("id", new_event_id())  # type: ignore[no-any-return]


class EventEnvelope:
    """An event: routing fields, metadata headers (str -> str), a body and, on replies, timing and status.

    ``sender`` is the wire field ``from`` (a Python keyword). A body is any MsgPack-able value: None, bool,
    int, float, str, bytes, list, dict, or a pydantic model / datetime, which the codec turns into plain data.
    """

    # Unset fields fall back to these class defaults, so building or decoding an event sets only what it
    # has: ~3x cheaper than assigning all seventeen (this is the hot path of the bus and the mesh).
    id: str = _LazyId()  # type: ignore[assignment]
    to: str | None = None
    body: Any = None
    headers: dict[str, str]
    status: int = 200
    sender: str | None = None
    reply_to: str | None = None
    cid: str | None = None
    trace_id: str | None = None
    trace_path: str | None = None
    span_id: str | None = None
    exec_time: float | None = None
    round_trip: float | None = None
    tags: dict[str, str] | None = None
    annotations: dict[str, Any] | None = None
    obj_type: str | None = None
    exception: str | None = None
    # when the caller stops waiting, on this process's time.perf_counter() clock; on the wire it travels as
    # `ttl`, the milliseconds left (docs/protocol/envelope.md)
    deadline: float | None = None
    # the caller's signed word of who it is, for a route that takes only some apps (docs/protocol/access.md)
    proof: dict[str, Any] | None = None
    # not on the wire: the app name (and origin) the edge it came through proved its caller to be
    caller: str | None = None
    caller_origin: str | None = None

    def __init__(
        self,
        to: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        status: int = 200,
        id: str | None = None,
        sender: str | None = None,
        reply_to: str | None = None,
        cid: str | None = None,
        trace_id: str | None = None,
        trace_path: str | None = None,
        span_id: str | None = None,
        exec_time: float | None = None,
        round_trip: float | None = None,
        tags: dict[str, str] | None = None,
        annotations: dict[str, Any] | None = None,
        obj_type: str | None = None,
        exception: str | None = None,
    ) -> None:
        if id is not None:
            self.id = id
        self.to = to
        self.body = body
        self.headers = headers if headers is not None else {}
        if status != 200:
            self.status = status
        if sender is not None:
            self.sender = sender
        if reply_to is not None:
            self.reply_to = reply_to
        if cid is not None:
            self.cid = cid
        if trace_id is not None:
            self.trace_id = trace_id
        if trace_path is not None:
            self.trace_path = trace_path
        if exec_time is not None:
            self.exec_time = exec_time
        if exception is not None:
            self.exception = exception
        if (
            span_id is not None
            or round_trip is not None
            or tags is not None
            or annotations is not None
            or (obj_type is not None)
        ):
            self.span_id, self.round_trip, self.tags = span_id, round_trip, tags
            self.annotations, self.obj_type = annotations, obj_type

    # -- conveniences a caller reaches for -------------------------------------------------------------
    def time_left(self) -> float | None:
        """Seconds until the caller stops waiting for this event (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.perf_counter()

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def error_message(self) -> str:
        """The error text of a failed reply (the body when it is a string)."""
        return self.body if isinstance(self.body, str) else str(self.body)

    def copy(self) -> EventEnvelope:
        clone = EventEnvelope.__new__(EventEnvelope)
        self.id  # noqa: B018  (drawn now: a copy keeps its original's id)
        clone.__dict__.update(self.__dict__)
        clone.headers = dict(self.headers)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventEnvelope):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [f"{n}={getattr(self, n)!r}" for n in FIELDS if getattr(self, n) is not None]
        return f"EventEnvelope({', '.join(parts)})"


_new = EventEnvelope.__new__


# The bus's own hot paths build their events here: set attributes on a bare instance, no keyword binding
# (a third of EventEnvelope(...)'s cost). Same result as the constructor with these arguments.
def request_event(to: str, body: Any, headers: dict[str, str]) -> EventEnvelope:
    event = _new(EventEnvelope)
    event.to, event.body, event.headers = to, body, headers
    return event


def reply_event(
    to: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    sender: str,
    cid: str | None,
    exec_time: float,
    exception: str | None,
) -> EventEnvelope:
    reply = _new(EventEnvelope)
    reply.to, reply.body, reply.headers, reply.sender, reply.exec_time = (
        to,
        body,
        headers if headers is not None else {},
        sender,
        exec_time,
    )
    if status != 200:
        reply.status = status
    if cid is not None:
        reply.cid = cid
    if exception is not None:
        reply.exception = exception
    return reply


#: every field, in the order the wire format lists them (`sender` is the wire's `from`)
FIELDS = (
    "id",
    "to",
    "sender",
    "reply_to",
    "cid",
    "trace_id",
    "trace_path",
    "span_id",
    "status",
    "headers",
    "body",
    "exec_time",
    "round_trip",
    "tags",
    "annotations",
    "obj_type",
    "exception",
    "proof",
)
