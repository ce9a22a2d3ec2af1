"""What the running handler is: route, trace id and trace path, carried to the PostOffice it creates."""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple


class EventContext(NamedTuple):
    route: str
    trace_id: str | None
    trace_path: str | None


current_event: ContextVar[EventContext | None] = ContextVar("meshkit_current_event", default=None)
