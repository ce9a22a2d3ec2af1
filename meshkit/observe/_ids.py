"""Trace ids and the trace headers: ``X-Trace-Id`` (any printable id) and W3C ``traceparent``."""

from __future__ import annotations

import random
import re

from meshkit.core import EventEnvelope, stamp

TRACE_HEADER = "X-Trace-Id"
TRACEPARENT_HEADER = "traceparent"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACE_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


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
