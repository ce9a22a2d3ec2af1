"""The HTTP edge of a trace: an ASGI middleware that continues or starts one for each request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from starlette.responses import Response

from meshkit.core import EventContext, current_event, current_span
from meshkit.observe._ids import TRACE_HEADER, new_trace_id, parse_traceparent, valid_trace_id
from meshkit.observe._tracing import Tracer

_R = TypeVar("_R", bound=Response)

log = logging.getLogger("meshkit.tracing")

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
        trace_header = (b"x-trace-id", trace_id.encode("latin-1"))
        token = current_event.set(EventContext("", trace_id, trace_path))
        span_token = current_span.set(parent_span)
        if edge is None:  # the usual case: no OpenTelemetry span to end with the response's status
            try:
                await self.app(scope, receive, _with_header(send, trace_header))
            finally:
                current_span.reset(span_token)
                current_event.reset(token)
            return
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await sending(message)

        sending = _with_header(send, trace_header)
        otel_token = otel.attach(edge)  # type: ignore[union-attr]
        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            current_span.reset(span_token)
            current_event.reset(token)
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


def _with_header(send: Send, header: tuple[bytes, bytes]) -> Send:
    """`send`, with the trace's header on the response unless the app set one."""

    async def send_with_header(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.setdefault("headers", [])
            for name, _ in headers:  # ASGI header names are lowercase
                if name == b"x-trace-id":
                    break
            else:
                headers.append(header)
        await send(message)

    return send_with_header


def install_tracing(app: Any, tracer: Tracer) -> None:
    """Put the tracing middleware on a FastAPI/Starlette app."""
    app.add_middleware(TracingMiddleware, tracer=tracer)


def trace_response_header(response: _R, trace_id: str | None) -> _R:
    """Write ``X-Trace-Id`` on a Starlette response (Event over HTTP)."""
    if valid_trace_id(trace_id):  # an envelope's trace id is any text: only a well-formed one is a header
        response.headers[TRACE_HEADER] = trace_id  # type: ignore[assignment]
    return response
