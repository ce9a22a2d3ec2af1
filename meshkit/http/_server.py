"""Event over HTTP, the callee's side: `POST /api/event` (docs/protocol/envelope.md; streams: streams.md).

A plain ASGI endpoint, not a FastAPI one: it reads its few headers and its body straight from the ASGI
messages, with none of FastAPI's request model, dependency solving or response wrapping, which cost more
than the envelope's own work (bench/event_http.py). It is not in the OpenAPI schema: its body is MsgPack.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from meshkit.core import (
    STREAM_CALLER_REQUIRED,
    TEXT_EVENT_STREAM,
    AppError,
    CodecError,
    EventEnvelope,
    Platform,
    current_event,
    decode,
    encode,
    utc_now_iso,
)
from meshkit.http._streaming import relay, streams
from meshkit.observe import valid_trace_id
from meshkit.security import CALLER_HEADER, KEY_HEADER, MeshKeys

log = logging.getLogger("meshkit.http")

OCTET_STREAM = "application/octet-stream"
DEFAULT_TTL_MS = 30_000
MIN_TTL_MS = 1_000
MAX_TTL_MS = 3_600_000  # an hour: a longer x-ttl is taken as this

_KEY = KEY_HEADER.encode("latin-1")
_CALLER = CALLER_HEADER.encode("latin-1")
_WANTED = frozenset((b"content-length", b"x-ttl", b"accept", b"x-async", _KEY, _CALLER))
_OCTET_HEADERS = [(b"content-type", OCTET_STREAM.encode())]


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client disconnected while its request was being read."""


class EventEndpoint:
    """`POST /api/event` for one platform, as an ASGI app."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.limit = platform.config.get_int("max.event.size", 16 * 1024 * 1024)
        self.keys = MeshKeys(platform.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                headers[name] = value
        client = scope["client"][0] if scope.get("client") else "unknown"
        try:
            answer = await self._answer(scope, receive, headers, client)
        except _Gone:
            log.debug("Event over HTTP from %s: the client went away before its event arrived", client)
            return
        if isinstance(answer, Response):  # a stream: Server-Sent Events
            await answer(scope, receive, send)
            return
        status, reply, trace_id = answer
        try:
            content = encode(reply)
        except CodecError as exc:
            log.error("Reply %s cannot be encoded: %s", reply.id, exc)
            failed = EventEnvelope(status=500, body=f"Unable to encode the reply: {exc}", cid=reply.cid)
            content = encode(failed)
        response_headers = [*_OCTET_HEADERS, (b"content-length", str(len(content)).encode())]
        if valid_trace_id(trace_id):  # an envelope's trace id is any text: only a well-formed one is a header
            response_headers.append((b"x-trace-id", trace_id.encode("latin-1")))  # type: ignore[union-attr]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": content})

    async def _answer(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], client: str
    ) -> tuple[int, EventEnvelope, str | None] | Response:
        """(HTTP status, reply envelope, trace id), or the streaming response of a streaming function."""
        platform = self.platform
        key = headers.get(_KEY)
        if not self.keys.accepts(key.decode("latin-1") if key is not None else None):
            return _refuse(401, f"Missing or invalid mesh API key ({KEY_HEADER} header)", client)
        try:
            data = await self._body(receive, headers.get(b"content-length"))
        except _TooLarge:
            return _refuse(413, f"Event larger than the maximum of {self.limit} bytes", client)
        try:
            event = decode(data)
        except CodecError as exc:
            return _refuse(400, f"Invalid event: {exc}", client)
        if not event.to:
            return _refuse(400, "Missing routing path", client)
        caller = headers.get(_CALLER)
        if caller is not None:
            _identify(platform, event, caller.decode("latin-1"), data, client)
        ttl_header = headers.get(b"x-ttl")
        try:
            ttl_ms = (
                min(MAX_TTL_MS, max(MIN_TTL_MS, int(ttl_header)))
                if ttl_header is not None
                else DEFAULT_TTL_MS
            )
        except ValueError:
            text = ttl_header.decode("latin-1", "replace")  # type: ignore[union-attr]
            return _refuse(400, f"Invalid x-ttl header {text!r}: milliseconds expected", client)
        event.reply_to = None
        edge = current_event.get()  # an X-Trace-Id / traceparent on the POST traces an untraced event
        if event.trace_id is None and edge is not None and edge.trace_id is not None:
            event.trace_id, event.trace_path = edge.trace_id, edge.trace_path
        if streams(platform, event.to):
            if TEXT_EVENT_STREAM.encode() not in headers.get(b"accept", b""):
                return _refuse(406, STREAM_CALLER_REQUIRED, client)
            answer = await relay(platform, event, ttl_ms / 1000)
            if not isinstance(answer, EventEnvelope):
                if valid_trace_id(event.trace_id):
                    answer.headers["x-trace-id"] = event.trace_id  # type: ignore[assignment]
                return answer
            answer.to = None  # refused before it streamed: the one reply, as for any function
            return 200, answer, event.trace_id
        try:
            if headers.get(b"x-async", b"").lower() == b"true":
                platform.dispatch(event, external=True)
                ack = EventEnvelope(
                    body={"type": "async", "delivered": True, "time": utc_now_iso()}, sender=platform.name
                )
                return 202, ack, event.trace_id
            reply = await platform.call(event, ttl_ms / 1000, external=True)
        except AppError as exc:
            return _refuse(exc.status, exc.message, client)
        except TimeoutError as exc:
            return _refuse(408, str(exc), client)
        reply.to = None
        return 200, reply, event.trace_id

    async def _body(self, receive: Receive, declared: bytes | None) -> bytes:
        limit = self.limit
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                raise _Gone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def event_router(platform: Platform) -> APIRouter:
    """`POST /api/event` for `platform`, as a router whose one route is the ASGI endpoint."""
    router = APIRouter()
    router.routes.append(Route("/api/event", EventEndpoint(platform), methods=["POST"]))
    return router


def _refuse(status: int, message: str, client: str) -> tuple[int, EventEnvelope, None]:
    log.warning("Event over HTTP from %s refused with %d: %s", client, status, message)
    return status, EventEnvelope(status=status, body=message), None


def _identify(platform: Platform, event: EventEnvelope, header: str, posted: bytes, client: str) -> None:
    """The caller named by `x-mesh-caller`, when it holds (docs/protocol/access.md#over-http)."""
    from meshkit.mesh import (
        NotProven,
    )  # loaded already when there is a mesh: an app without one never needs it

    proofs = getattr(platform.remote, "proofs", None)  # the mesh's CallerProofs (meshkit/mesh/_callers.py)
    if proofs is None:
        log.warning(
            "Event over HTTP from %s: an %s header, but this app is not in a mesh", client, CALLER_HEADER
        )
        return
    try:
        proofs.identify_http(event, header, posted)
    except NotProven as exc:
        log.warning(
            "Event over HTTP from %s for %s: its caller proof does not hold: %s", client, event.to, exc
        )
