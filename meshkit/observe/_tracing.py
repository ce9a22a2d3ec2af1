"""Distributed tracing: a trace starts at the HTTP edge and rides the envelope over the bus, mesh and HTTP.

- The edge (:class:`TracingMiddleware`) continues the trace of an ``X-Trace-Id`` or a W3C ``traceparent``
  request header, or starts one when ``tracing.enabled`` / ``tracing.paths`` say so. It sets the current
  trace (``meshkit.core.current_event``), so a PostOffice created while the request runs stamps
  ``trace_id`` / ``trace_path`` on every event it sends, and it answers with the ``X-Trace-Id`` header.
- Each execution of a function on a traced event emits one trace record: a line on the ``meshkit.trace``
  logger and, when ``distributed.trace.forwarder`` names a route, a drop-and-forget event to that route
  (the forwarder's own executions are never traced). With ``tracing.otel=true`` and the ``otel`` extra
  installed, each execution is an OpenTelemetry span too (see :mod:`meshkit.observe.otel`).
- Span links: an execution gets a span id; events it sends carry it as their ``span_id``, the parent of the
  executions they cause, in this process or another.

The trace record (JSON): ``trace_id, trace_path, origin, app, route, from, start, exec_time, round_trip,
status, success, exception?, span_id, parent_span_id``. ``exec_time`` is the handler's run time in ms;
``round_trip`` is the time from the event's arrival at the function (queue wait included) to its reply.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from contextvars import Token
from typing import TYPE_CHECKING, Any

from meshkit.core import AppError, EventEnvelope, Platform, current_span, stamp
from meshkit.observe._ids import new_span_id

if TYPE_CHECKING:
    from meshkit.observe.otel import OtelBridge

log = logging.getLogger("meshkit.tracing")
trace_log = logging.getLogger("meshkit.trace")

# paths `tracing.enabled=true` leaves alone: the actuators, the docs, and Event over HTTP (whose envelopes
# carry their own trace)
_UNTRACED_PATHS = (
    "/health",
    "/livenessprobe",
    "/info",
    "/env",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/api/event",
)


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- one execution -------------------------------------------------------------------------------------------
class Span:
    """One traced execution of a function: created by :meth:`Tracer.begin`, closed by :meth:`end`."""

    __slots__ = (
        "arrived",
        "event",
        "otel",
        "otel_token",
        "parent",
        "route",
        "span_id",
        "start",
        "token",
        "tracer",
    )

    def __init__(
        self, tracer: Tracer, route: str, event: EventEnvelope, parent: str | None, arrived: float
    ) -> None:
        self.tracer, self.route, self.event, self.parent, self.arrived = tracer, route, event, parent, arrived
        self.start = time.time()
        self.otel: Any = None
        self.otel_token: object = None
        if tracer.otel is not None:
            self.otel = tracer.otel.start(route, event, parent)
            self.span_id = tracer.otel.span_id(self.otel)
            self.otel_token = tracer.otel.attach(self.otel)
        else:
            self.span_id = new_span_id()
        self.token: Token[str | None] = current_span.set(self.span_id)

    def detach(self) -> None:
        """The execution's code is done with this context (what it spawned keeps its copy)."""
        current_span.reset(self.token)
        if self.otel_token is not None:
            self.tracer.otel.detach(self.otel_token)  # type: ignore[union-attr]

    def end(
        self,
        status: int,
        elapsed: float,
        result: Any,
        *,
        segments: int | None = None,
        size: int | None = None,
    ) -> None:
        """The execution finished: `elapsed` seconds of run time, `result` the reply body; a stream's data
        `segments` and their `size` in bytes."""
        stream = (segments, size or 0) if segments is not None else None
        self.tracer.record(self, status, elapsed, result if status >= 400 else None, stream)


class Tracer:
    """The platform's trace sinks: the log, the forwarder route, OpenTelemetry."""

    def __init__(self, platform: Platform) -> None:
        config = platform.config
        self.platform = platform
        self.forwarder = (config.get("distributed.trace.forwarder", "") or "").strip() or None
        self.log = config.get_bool("tracing.log", True)
        self.enabled = config.get_bool("tracing.enabled", False)
        self.paths = tuple(config.get_list("tracing.paths"))
        self.otel: OtelBridge | None = None
        if config.get_bool("tracing.otel", False):
            try:
                from meshkit.observe.otel import OtelBridge
            except ImportError as exc:
                log.warning(
                    "tracing.otel=true but OpenTelemetry is not installed (pip install 'meshkit[otel]'): %s",
                    exc,
                )
            else:
                self.otel = OtelBridge(platform)
        self._forwarder_failed = False

    @property
    def active(self) -> bool:
        return self.log or self.forwarder is not None or self.otel is not None

    def begin(self, route: str, event: EventEnvelope, arrived: float) -> Span | None:
        """Start a traced execution (the caller checked ``event.trace_id``); None for the forwarder."""
        if route == self.forwarder or not self.active:
            return None
        stamp(event)  # an execution's context starts as a copy of its caller's: the caller's span
        return Span(self, route, event, event.span_id, arrived)

    def record(
        self, span: Span, status: int, elapsed: float, error: Any, stream: tuple[int, int] | None = None
    ) -> None:
        event = span.event
        now = time.perf_counter()
        record: dict[str, Any] = {
            "trace_id": event.trace_id,
            "trace_path": event.trace_path,
            "origin": self.platform.origin,
            "app": self.platform.name,
            "route": span.route,
            "from": event.sender,
            "start": _iso(span.start),
            "exec_time": round(elapsed * 1000, 3),
            "round_trip": round((now - span.arrived) * 1000, 3),
            "status": status,
            "success": status < 400,
            "span_id": span.span_id,
            "parent_span_id": span.parent,
        }
        if stream is not None:  # one span per stream: what it sent
            record["segments"], record["bytes"] = stream
        if error is not None:
            text = error if isinstance(error, str) else str(error)
            record["exception"] = text if len(text) <= 1000 else text[:1000] + "..."
        if span.otel is not None and self.otel is not None:
            self.otel.end(span.otel, record)
        if self.log and trace_log.isEnabledFor(logging.INFO):
            trace_log.info(
                "%s", json.dumps(record, separators=(",", ":"), default=str), extra={"trace": record}
            )
        if self.forwarder is not None:
            self._forward(record)

    def _forward(self, record: dict[str, Any]) -> None:
        try:
            self.platform.dispatch(EventEnvelope(self.forwarder, record, {"type": "trace"}))
        except AppError as exc:
            if not self._forwarder_failed:
                self._forwarder_failed = True
                log.warning("Trace records not forwarded to %s: %s", self.forwarder, exc.message)
            return
        self._forwarder_failed = False

    def starts_trace(self, path: str) -> bool:
        """Whether a request without trace headers to `path` starts a trace (the config switches)."""
        if self.paths:
            return path.startswith(self.paths)
        return self.enabled and not path.startswith(_UNTRACED_PATHS)
