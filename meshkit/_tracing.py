"""Distributed tracing: a trace starts at the HTTP edge and rides the envelope over the bus, mesh and HTTP.

- The edge (:class:`TracingMiddleware`) continues the trace of an ``X-Trace-Id`` or a W3C ``traceparent``
  request header, or starts one when ``tracing.enabled`` / ``tracing.paths`` say so. It sets the current
  trace (``meshkit._context.current_event``), so a PostOffice created while the request runs stamps
  ``trace_id`` / ``trace_path`` on every event it sends, and it answers with the ``X-Trace-Id`` header.
- Each execution of a function on a traced event emits one trace record: a line on the ``meshkit.trace``
  logger and, when ``distributed.trace.forwarder`` names a route, a drop-and-forget event to that route
  (the forwarder's own executions are never traced). With ``tracing.otel=true`` and the ``otel`` extra
  installed, each execution is an OpenTelemetry span too (see :mod:`meshkit.otel`).
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
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.responses import Response

from meshkit._context import EventContext, current_event
from meshkit._envelope import EventEnvelope
from meshkit._functions import AppError

if TYPE_CHECKING:
    from meshkit._platform import Platform
    from meshkit.otel import OtelBridge

_R = TypeVar("_R", bound=Response)

log = logging.getLogger("meshkit.tracing")
trace_log = logging.getLogger("meshkit.trace")

TRACE_HEADER = "X-Trace-Id"
TRACEPARENT_HEADER = "traceparent"

#: the span id of the running execution (or the caller's span at the HTTP edge): the parent of what it sends
current_span: ContextVar[str | None] = ContextVar("meshkit_current_span", default=None)

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

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACE_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


# -- ids and headers ----------------------------------------------------------------------------------------
def new_trace_id() -> str:
    """32 lowercase hex characters: a W3C trace id, and a Mercury-style one (a uuid without dashes)."""
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """``(trace_id, parent_span_id, sampled)`` from a W3C ``traceparent``, or None when it is not valid.

    Version 00 is exactly ``00-<32 hex>-<16 hex>-<2 hex>``; a later version may append fields; ``ff``,
    uppercase hex and all-zero ids are invalid.
    """
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def valid_trace_id(value: str | None) -> bool:
    return value is not None and _TRACE_ID.fullmatch(value) is not None


def format_traceparent(trace_id: str, span_id: str | None) -> str | None:
    """A ``traceparent`` for an event: only when the trace id is W3C-shaped and there is a span."""
    if span_id is None or len(trace_id) != 32 or parse_traceparent(f"00-{trace_id}-{span_id}-01") is None:
        return None
    return f"00-{trace_id}-{span_id}-01"


def stamp(event: EventEnvelope) -> None:
    """Give a traced event leaving the running function its parent span and its sender (``from``)."""
    if event.span_id is None:
        event.span_id = current_span.get()
    if event.sender is None:
        context = current_event.get()
        if context is not None and context.route:
            event.sender = context.route


def trace_headers(event: EventEnvelope) -> dict[str, str]:
    """``X-Trace-Id`` (and ``traceparent`` when it can be had) for an event sent over HTTP."""
    if event.trace_id is None:
        return {}
    stamp(event)
    headers = {TRACE_HEADER: event.trace_id}
    parent = format_traceparent(event.trace_id, event.span_id)
    if parent is not None:
        headers[TRACEPARENT_HEADER] = parent
    return headers


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
            self.otel = tracer.otel.start(self)
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

    def end(self, status: int, elapsed: float, result: Any) -> None:
        """The execution finished: `elapsed` seconds of run time, `result` the reply body."""
        self.tracer.record(self, status, elapsed, result if status >= 400 else None)


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
                from meshkit.otel import OtelBridge
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
        stamp(event)  # the inline path: the caller's context is still the current one
        return Span(self, route, event, event.span_id, arrived)

    def record(self, span: Span, status: int, elapsed: float, error: Any) -> None:
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


_tracers: weakref.WeakKeyDictionary[Platform, Tracer] = weakref.WeakKeyDictionary()


def tracer_for(platform: Platform) -> Tracer:
    """The platform's tracer, made from its configuration on first use."""
    tracer = _tracers.get(platform)
    if tracer is None:
        tracer = _tracers[platform] = Tracer(platform)
    return tracer


# -- the HTTP edge -------------------------------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TracingMiddleware:
    """ASGI middleware: continue or start a trace for each HTTP request (see the module's doc)."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = parent = None
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                given = value.decode("latin-1").strip()
            elif name == b"traceparent":
                parent = value.decode("latin-1")
        path: str = scope.get("path", "")
        if given is None and parent is None and not self.tracer.starts_trace(path):
            await self.app(scope, receive, send)
            return
        trace_id, parent_span = self._incoming(given, parent)
        method: str = scope.get("method", "GET")
        trace_path = f"{method} {path}"
        otel = self.tracer.otel
        edge = otel.start_edge(trace_path, trace_id, parent_span, scope) if otel is not None else None
        if edge is not None:
            if trace_id is None:
                trace_id = otel.trace_id_of(edge)  # type: ignore[union-attr]
            parent_span = otel.span_id(edge)  # type: ignore[union-attr]
        if trace_id is None:
            trace_id = new_trace_id()
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name.lower() == b"x-trace-id" for name, _ in headers):
                    headers.append((b"x-trace-id", trace_id.encode("latin-1")))
            await send(message)

        token = current_event.set(EventContext("", trace_id, trace_path))
        span_token = current_span.set(parent_span)
        otel_token = otel.attach(edge) if edge is not None else None  # type: ignore[union-attr]
        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            current_span.reset(span_token)
            current_event.reset(token)
            if edge is not None:
                otel.detach(otel_token)  # type: ignore[union-attr]
                otel.end_edge(edge, status)  # type: ignore[union-attr]

    def _incoming(self, given: str | None, parent: str | None) -> tuple[str | None, str | None]:
        """The trace id and the caller's span from the request headers (None, None: start a new trace)."""
        trace_id = parent_span = None
        if given is not None:
            if valid_trace_id(given):
                trace_id = given
            else:
                log.debug("Ignored an invalid %s header %r: a new trace starts", TRACE_HEADER, given[:200])
        if parent is not None:
            parsed = parse_traceparent(parent)
            if parsed is None:
                log.debug("Ignored an invalid traceparent header %r: a new trace starts", parent[:200])
            elif trace_id is None or trace_id.lower() == parsed[0]:
                trace_id, parent_span = trace_id or parsed[0], parsed[1]
        return trace_id, parent_span


def install_tracing(app: Any, platform: Platform) -> Tracer:
    """Put the tracing middleware on a FastAPI/Starlette app."""
    tracer = tracer_for(platform)
    app.add_middleware(TracingMiddleware, tracer=tracer)
    return tracer


def trace_response_header(response: _R, trace_id: str | None) -> _R:
    """Write ``X-Trace-Id`` on a Starlette response (Event over HTTP)."""
    if valid_trace_id(trace_id):  # an envelope's trace id is any text: only a well-formed one is a header
        response.headers[TRACE_HEADER] = trace_id  # type: ignore[assignment]
    return response
