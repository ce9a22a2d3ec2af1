"""What is running now: the handler's route and trace, and the span of its execution.

A PostOffice created while a handler (or a traced HTTP request) runs reads these, so the events it sends carry
the trace on; an event leaving the running execution is stamped with its span as the parent (`stamp`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, NamedTuple

from meshkit.core._envelope import EventEnvelope


class EventContext(NamedTuple):
    route: str
    trace_id: str | None
    trace_path: str | None
    # the Platform running the handler, for the PostOffice it creates (Any: this module sits below it)
    platform: Any = None
    deadline: float | None = None  # when the running event's caller stops waiting (perf_counter)


current_event: ContextVar[EventContext | None] = ContextVar("meshkit_current_event", default=None)


class _Process:
    """Whether every execution must name its platform in `current_event`: when several platforms run in
    this process (meshkit.testing), a PostOffice made in a handler must find its own; with one, the
    process-wide current platform is that one, and an untraced inline run skips the context (~0.2 us)."""

    __slots__ = ("platforms", "shared")

    def __init__(self) -> None:
        self.platforms = 0  # started and not stopped
        self.shared = False  # read on the hot path: a plain attribute, not a property

    def count(self, change: int) -> None:
        self.platforms += change
        self.shared = self.platforms > 1


PROCESS = _Process()


class _Inline:
    """The deadline of the handler step running now on the event loop, for the calls it makes.

    A step of an async handler runs synchronously inside `coroutine.send()`, so the pool sets this around
    each step it drives: a plain attribute (~30 ns) instead of a context variable set and reset (~110 ns),
    on the hot path of every request. `None`: no pooled step is running (a plain `def` handler's PostOffice
    read the deadline from its thread's context); `NO_DEADLINE`: one is, and its event has no deadline.
    Written and read only on the loop's thread.
    """

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline: float | None = None


INLINE = _Inline()
NO_DEADLINE = float("inf")


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
