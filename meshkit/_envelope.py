"""EventEnvelope: the one message type of the event bus, the mesh and Event over HTTP."""

from __future__ import annotations

import itertools
import os
from typing import Any

# Unique within the process and cheap: a random prefix and a counter (uuid4 costs ~2 us per event).
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def new_event_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):x}"


class EventEnvelope:
    """An event: routing fields, metadata headers (str -> str), a body and, on replies, timing and status.

    ``sender`` is the wire field ``from`` (a Python keyword). A body is any MsgPack-able value: None, bool,
    int, float, str, bytes, list, dict, or a pydantic model / datetime, which the codec turns into plain data.
    """

    __slots__ = (
        "annotations",
        "body",
        "cid",
        "exception",
        "exec_time",
        "headers",
        "id",
        "obj_type",
        "reply_to",
        "round_trip",
        "sender",
        "span_id",
        "status",
        "tags",
        "to",
        "trace_id",
        "trace_path",
    )

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
        self.id: str = id if id is not None else new_event_id()
        self.to = to
        self.body = body
        self.headers: dict[str, str] = headers if headers is not None else {}
        self.status = status
        self.sender = sender
        self.reply_to = reply_to
        self.cid = cid
        self.trace_id = trace_id
        self.trace_path = trace_path
        self.span_id = span_id
        self.exec_time = exec_time
        self.round_trip = round_trip
        self.tags = tags
        self.annotations = annotations
        self.obj_type = obj_type
        self.exception = exception

    # -- conveniences a caller reaches for -------------------------------------------------------------
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
        for name in EventEnvelope.__slots__:
            setattr(clone, name, getattr(self, name))
        clone.headers = dict(self.headers)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventEnvelope):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in EventEnvelope.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [f"{n}={getattr(self, n)!r}" for n in EventEnvelope.__slots__ if getattr(self, n) is not None]
        return f"EventEnvelope({', '.join(parts)})"
