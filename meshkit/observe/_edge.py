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
    """ASGI middleware: continue or start a trace for each HTTP request (see the module's doc).

    Not a coroutine function: a request that starts no trace (no trace header, the config's switches off) is
    handed on as the app's own awaitable, with no frame of this middleware's in its way; what it pays is one
    look at its headers. A traced one runs :meth:`_traced`.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        given = parent = None
        for name, value in scope["headers"]:
            if name == b"x-trace-id":
                given = value
            elif name == b"traceparent":
                parent = value
        if given is None and parent is None:
            tracer = self.tracer
            if not (tracer.paths or tracer.enabled) or not tracer.starts_trace(scope.get("path", "")):
                return self.app(scope, receive, send)
        return self._traced(scope, receive, send, given, parent)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, given: bytes | None, parent: bytes | None
    ) -> None:
        """The request, in its trace: `given` and `parent` are its X-Trace-Id and traceparent headers."""
        trace_id, parent_span = self._incoming(given, parent)
        trace_path = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
        otel = self.tracer.otel
        edge = otel.start_edge(trace_path, trace_id, parent_span, scope) if otel is not None else None
        if edge is not None:
            if trace_id is None:
                trace_id = otel.trace_id_of(edge)  # type: ignore[union-attr]
            parent_span = otel.span_id(edge)  # type: ignore[union-attr]
        if trace_id is None:
            trace_id = new_trace_id()
        trace_header = (b"x-trace-id", trace_id.encode("latin-1"))
        token = current_event.set(_context(EventContext, ("", trace_id, trace_path, None, None)))
        # the caller's span: none for an X-Trace-Id alone, and then no set (and reset) that changes nothing
        span_token = (
            current_span.set(parent_span)
            if parent_span is not None or current_span.get() is not None
            else None
        )
        if edge is None:  # the usual case: no OpenTelemetry span to end with the response's status
            try:
                await self.app(scope, receive, _with_header(send, trace_header))
            finally:
                if span_token is not None:
                    current_span.reset(span_token)
                current_event.reset(token)
            return
        status = 500
        sending = _with_header(send, trace_header)

        def send_with_trace(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return sending(message)

        otel_token = otel.attach(edge)  # type: ignore[union-attr]
        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            if span_token is not None:
                current_span.reset(span_token)
            current_event.reset(token)
            otel.detach(otel_token)  # type: ignore[union-attr]
            otel.end_edge(edge, status)  # type: ignore[union-attr]

    def _incoming(self, given: bytes | None, parent: bytes | None) -> tuple[str | None, str | None]:
        """The trace id and the caller's span from the request headers (None, None: start a new trace)."""
        trace_id = parent_span = None
        if given is not None:
            text = given.decode("latin-1").strip()
            if valid_trace_id(text):
                if parent is None:  # the usual case: an X-Trace-Id alone
                    return text, None
                trace_id = text
            else:
                log.debug("Ignored an invalid %s header %r: a new trace starts", TRACE_HEADER, text[:200])
        if parent is not None:
            value = parent.decode("latin-1")
            parsed = parse_traceparent(value)
            if parsed is None:
                log.debug("Ignored an invalid traceparent header %r: a new trace starts", value[:200])
            elif trace_id is None or trace_id.lower() == parsed[0]:
                trace_id, parent_span = trace_id or parsed[0], parsed[1]
        return trace_id, parent_span


# an EventContext from its five fields, without the Python-level __new__ NamedTuple gives it for its defaults
_context = tuple.__new__


def _with_header(send: Send, header: tuple[bytes, bytes]) -> Send:
    """`send`, with the trace's header on the response unless the app set one.

    A plain function returning `send`'s own awaitable: no coroutine of its own for each message.
    """

    def send_with_header(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = message.setdefault("headers", [])
            for name, _ in headers:  # ASGI header names are lowercase
                if name == b"x-trace-id":
                    break
            else:
                headers.append(header)
        return send(message)

    return send_with_header


def install_tracing(app: Any, tracer: Tracer) -> None:
    """Put the tracing middleware on a FastAPI/Starlette app."""
    app.add_middleware(TracingMiddleware, tracer=tracer)


def trace_response_header(response: _R, trace_id: str | None) -> _R:
    """Write ``X-Trace-Id`` on a Starlette response (Event over HTTP)."""
    if valid_trace_id(trace_id):  # an envelope's trace id is any text: only a well-formed one is a header
        response.headers[TRACE_HEADER] = trace_id  # type: ignore[assignment]
    return response
