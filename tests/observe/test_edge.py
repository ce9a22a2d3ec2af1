"""The HTTP edge as an ASGI middleware (meshkit/observe/_edge.py), driven directly: what an endpoint sees of
the trace while it runs, what the response carries, and that the context is as it was afterwards."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from meshkit.config import AppConfig
from meshkit.core import EventContext, Platform, current_event, current_span
from meshkit.observe import Tracer, TracingMiddleware

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"

Message = dict[str, Any]


def _edge(seen: list[tuple[EventContext | None, str | None]], own_header: bytes | None = None) -> Any:
    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        seen.append((current_event.get(), current_span.get()))
        headers = [(b"content-type", b"text/plain")]
        if own_header is not None:
            headers.append((b"x-trace-id", own_header))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    platform = Platform(AppConfig.load(search_paths=[], overrides={"cloud.connector": "none"}), name="edge")
    return TracingMiddleware(endpoint, Tracer(platform))


async def _request(app: Any, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope = {"type": "http", "method": "GET", "path": "/hello", "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    answer = app(scope, receive, send)
    assert isinstance(answer, Awaitable)
    await answer
    return sent


def _trace_headers(sent: list[Message]) -> list[bytes]:
    return [value for name, value in sent[0]["headers"] if name == b"x-trace-id"]


async def test_an_untraced_request_sees_no_trace_and_its_response_is_untouched() -> None:
    seen: list[tuple[EventContext | None, str | None]] = []
    sent = await _request(_edge(seen), [(b"host", b"edge")])
    assert seen == [(None, None)]
    assert sent[0]["headers"] == [(b"content-type", b"text/plain")] and sent[1]["body"] == b"ok"


async def test_an_x_trace_id_is_the_requests_trace_with_no_parent_span() -> None:
    seen: list[tuple[EventContext | None, str | None]] = []
    sent = await _request(_edge(seen), [(b"host", b"edge"), (b"x-trace-id", f" {TRACE} ".encode())])
    ((context, span),) = seen
    assert context == EventContext("", TRACE, "GET /hello") and context.platform is None
    assert context.deadline is None and span is None
    assert _trace_headers(sent) == [TRACE.encode()]
    assert current_event.get() is None and current_span.get() is None


async def test_a_traceparent_gives_the_parent_span_and_the_context_is_restored_after() -> None:
    seen: list[tuple[EventContext | None, str | None]] = []
    outer = current_span.set("outer-span")  # what ran before the request: the edge hides it, then restores
    try:
        await _request(_edge(seen), [(b"x-trace-id", TRACE.encode())])
        await _request(_edge(seen), [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())])
        assert current_span.get() == "outer-span" and current_event.get() is None
    finally:
        current_span.reset(outer)
    assert [span for _, span in seen] == [None, PARENT]
    assert [context.trace_id for context, _ in seen if context is not None] == [TRACE, TRACE]


async def test_the_apps_own_x_trace_id_header_is_kept() -> None:
    seen: list[tuple[EventContext | None, str | None]] = []
    sent = await _request(_edge(seen, own_header=b"mine"), [(b"x-trace-id", TRACE.encode())])
    assert _trace_headers(sent) == [b"mine"]


async def test_a_websocket_and_lifespan_pass_through() -> None:
    calls: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    platform = Platform(AppConfig.load(search_paths=[], overrides={"cloud.connector": "none"}), name="edge")
    edge = TracingMiddleware(inner, Tracer(platform))
    for kind in ("websocket", "lifespan"):
        await edge({"type": kind, "path": "/x", "headers": [(b"x-trace-id", b"t")]}, None, None)
    assert calls == ["websocket", "lifespan"]
