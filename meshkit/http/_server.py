"""Event over HTTP, the callee's side: `POST /api/event` (docs/protocol/envelope.md; streams: streams.md)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

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
from meshkit.http._routes import ExactRoute
from meshkit.http._streaming import relay, streams
from meshkit.observe import trace_response_header
from meshkit.security import KEY_HEADER, MeshKeys

log = logging.getLogger("meshkit.http")

OCTET_STREAM = "application/octet-stream"
DEFAULT_TTL_MS = 30_000
MIN_TTL_MS = 1_000
MAX_TTL_MS = 3_600_000  # an hour: a longer x-ttl is taken as this


class _TooLarge(Exception):
    pass


def event_router(platform: Platform) -> APIRouter:
    router = APIRouter(route_class=ExactRoute)
    limit = platform.config.get_int("max.event.size", 16 * 1024 * 1024)
    keys = MeshKeys(platform.config)

    @router.post("/api/event", include_in_schema=True, summary="Event over HTTP")
    async def api_event(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if not keys.accepts(request.headers.get(KEY_HEADER)):
            return _refuse(401, f"Missing or invalid mesh API key ({KEY_HEADER} header)", client)
        try:
            data = await _read_limited(request, limit)
        except _TooLarge:
            return _refuse(413, f"Event larger than the maximum of {limit} bytes", client)
        try:
            event = decode(data)
        except CodecError as exc:
            return _refuse(400, f"Invalid event: {exc}", client)
        if not event.to:
            return _refuse(400, "Missing routing path", client)
        ttl_header = request.headers.get("x-ttl")
        try:
            ttl_ms = (
                min(MAX_TTL_MS, max(MIN_TTL_MS, int(ttl_header)))
                if ttl_header is not None
                else DEFAULT_TTL_MS
            )
        except ValueError:
            return _refuse(400, f"Invalid x-ttl header {ttl_header!r}: milliseconds expected", client)
        event.reply_to = None
        edge = current_event.get()  # an X-Trace-Id / traceparent on the POST traces an untraced event
        if event.trace_id is None and edge is not None and edge.trace_id is not None:
            event.trace_id, event.trace_path = edge.trace_id, edge.trace_path
        if streams(platform, event.to):
            if TEXT_EVENT_STREAM not in request.headers.get("accept", ""):
                return _refuse(406, STREAM_CALLER_REQUIRED, client)
            answer = await relay(platform, event, ttl_ms / 1000)
            if not isinstance(answer, EventEnvelope):
                return trace_response_header(answer, event.trace_id)
            answer.to = None  # refused before it streamed: the one reply, as for any function
            return trace_response_header(_answer(200, answer), event.trace_id)
        try:
            if request.headers.get("x-async", "").lower() == "true":
                platform.dispatch(event, external=True)
                ack = EventEnvelope(
                    body={"type": "async", "delivered": True, "time": utc_now_iso()}, sender=platform.name
                )
                return trace_response_header(_answer(202, ack), event.trace_id)
            reply = await platform.call(event, ttl_ms / 1000, external=True)
        except AppError as exc:
            return _refuse(exc.status, exc.message, client)
        except TimeoutError as exc:
            return _refuse(408, str(exc), client)
        reply.to = None
        return trace_response_header(_answer(200, reply), event.trace_id)

    return router


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(status: int, message: str, client: str) -> Response:
    log.warning("Event over HTTP from %s refused with %d: %s", client, status, message)
    return _answer(status, EventEnvelope(status=status, body=message))


def _answer(status: int, reply: EventEnvelope) -> Response:
    try:
        content = encode(reply)
    except CodecError as exc:
        log.error("Reply %s cannot be encoded: %s", reply.id, exc)
        content = encode(EventEnvelope(status=500, body=f"Unable to encode the reply: {exc}", cid=reply.cid))
    return Response(content=content, status_code=status, media_type=OCTET_STREAM)
