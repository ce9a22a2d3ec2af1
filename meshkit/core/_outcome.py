"""What an execution answers: its result or its failure as a reply, observed in the route's stats and span.

The pool (meshkit.core._pool) decides when a function runs; this module turns what came of it into the reply
its caller gets: a result as plain data, an error as its status and message (AppError, a body its model
refused, any other exception as 500), and an event that expired in the backlog as 408, never run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from meshkit.core._codec import PLAIN, to_plain
from meshkit.core._envelope import EventEnvelope, reply_event
from meshkit.core._errors import AppError
from meshkit.core._seams import Span
from meshkit.core._stats import RouteStats

log = logging.getLogger("meshkit.worker")


def expired_reply(route: str, event: EventEnvelope, arrived: float) -> EventEnvelope | None:
    """The 408 of an event whose caller stopped waiting before it could run (None: it wants no reply)."""
    now = time.perf_counter()
    late = (now - event.deadline) * 1000 if event.deadline is not None else 0.0
    waited = (now - arrived) * 1000
    log.debug("%s expired %.0f ms before it could run (waited %.0f ms)", route, late, waited)
    if event.reply_to is None:
        return None
    message = f"Route {route}: the deadline passed {late:.0f} ms before it could run"
    return EventEnvelope(
        event.reply_to, message, status=408, sender=route, cid=event.cid, exception="Expired"
    )


def failure_of(
    route: str, body_model: type[BaseModel] | None, event: EventEnvelope, exc: BaseException
) -> tuple[int, Any, str]:
    """(status, message, exception name) for what a handler raised; a cancellation is re-raised."""
    if isinstance(exc, AppError):
        return exc.status, exc.message, "AppError"
    if isinstance(exc, ValidationError):
        return 400, _validation_message(body_model, exc), "ValidationError"
    if not isinstance(exc, Exception):  # cancellation, KeyboardInterrupt: not ours to swallow
        raise exc
    log.warning("%s failed on event %s: %s", route, event.id, exc, exc_info=exc)
    return 500, str(exc) or type(exc).__name__, type(exc).__name__


def make_reply(
    route: str,
    stats: RouteStats,
    event: EventEnvelope,
    started: float,
    status: int,
    result: Any,
    exception: str | None,
    span: Span | None = None,
) -> EventEnvelope | None:
    """The reply to `event` (None for a drop-and-forget one), its run time observed since `started`."""
    headers = None
    if type(result) is EventEnvelope:
        status, headers, result = result.status, result.headers or None, result.body
    if not isinstance(result, PLAIN):  # a model or a datetime: plain data, as on the wire
        try:
            result = to_plain(result)
        except ValueError as exc:
            status, result, exception = 500, f"Unable to serialize the result: {exc}", "CodecError"
    elapsed = time.perf_counter() - started
    stats.observe(elapsed, status)
    if span is not None:
        span.end(status, elapsed, result)
    if event.reply_to is None:
        if status >= 400:
            log.warning("%s returned %d for drop-and-forget event %s: %s", route, status, event.id, result)
        return None
    answer = reply_event(event.reply_to, result, headers, status, route, event.cid, elapsed * 1000, exception)
    if event.trace_id is not None:
        answer.trace_id, answer.trace_path = event.trace_id, event.trace_path
    return answer


def _validation_message(model: type[BaseModel] | None, exc: ValidationError) -> str:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
    name = model.__name__ if model is not None else "body"
    return f"Invalid {name}: {problems}"
