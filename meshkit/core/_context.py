"""What is running now: the handler's route and trace, and the span of its execution.

A PostOffice created while a handler (or a traced HTTP request) runs reads these, so the events it sends carry
the trace on; an event leaving the running execution is stamped with its span as the parent (`stamp`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple

from meshkit.core._envelope import EventEnvelope


class EventContext(NamedTuple):
    route: str
    trace_id: str | None
    trace_path: str | None


current_event: ContextVar[EventContext | None] = ContextVar("meshkit_current_event", default=None)

#: the span id of the running execution (or the caller's span at the HTTP edge): the parent of what it sends
current_span: ContextVar[str | None] = ContextVar("meshkit_current_span", default=None)


def stamp(event: EventEnvelope) -> None:
    """Give a traced event leaving the running function its parent span and its sender (``from``)."""
    if event.span_id is None:
        event.span_id = current_span.get()
    if event.sender is None:
        context = current_event.get()
        if context is not None and context.route:
            event.sender = context.route
