"""The event bus: envelope and wire codec, functions and `@route`, their pools, the platform, the PostOffice.

It imports nothing of FastAPI, Starlette, prometheus-client, the mesh or any connector: what those add is
plugged in through the protocols of `_seams.py` (RemoteRouter, LocalBus, Tracer, EventClient).
"""

from meshkit.core._access import NOT_PROVEN
from meshkit.core._address import Address
from meshkit.core._codec import (
    Buffer,
    CodecError,
    bin_header,
    decode,
    decode_pieces,
    encode,
    encode_split,
    envelope_from_map,
    envelope_to_map,
    pack,
    to_plain,
)
from meshkit.core._context import EventContext, current_event, current_span, stamp
from meshkit.core._contracts import contract, contract_hints, schema_of
from meshkit.core._envelope import FIELDS, EventEnvelope, new_event_id
from meshkit.core._errors import AppError
from meshkit.core._eventstream import EventStream, StreamData
from meshkit.core._functions import (
    FunctionRegistry,
    FunctionSpec,
    Handler,
    default_registry,
    make_spec,
    route,
    validate_route_name,
)
from meshkit.core._markers import (
    DATA,
    ENVELOPE,
    EOF,
    EXCEPTION,
    STREAM_CALLER_REQUIRED,
    TEXT_EVENT_STREAM,
    X_EVENT_NAME,
    X_EVENT_STREAM,
    X_TTL,
    error_body,
    error_message,
    exception_segment,
    stream_signal,
)
from meshkit.core._outlet import StreamCancelled
from meshkit.core._platform import (
    Platform,
    RouteListener,
    current_platform,
    new_origin,
    running_platforms,
)
from meshkit.core._pool import FunctionPool
from meshkit.core._postoffice import PostOffice, SyncEventStream, SyncPostOffice
from meshkit.core._seams import EventClient, LocalBus, MeshCounters, RemoteRouter, RoutingView, Span, Tracer
from meshkit.core._stats import LATENCY_BUCKETS, RouteStats
from meshkit.core._time import elapsed_text, iso_utc_ms, utc_now_iso
from meshkit.core._writer import EventStreamWriter

__all__ = [
    "DATA",
    "ENVELOPE",
    "EOF",
    "EXCEPTION",
    "FIELDS",
    "LATENCY_BUCKETS",
    "NOT_PROVEN",
    "STREAM_CALLER_REQUIRED",
    "TEXT_EVENT_STREAM",
    "X_EVENT_NAME",
    "X_EVENT_STREAM",
    "X_TTL",
    "Address",
    "AppError",
    "Buffer",
    "CodecError",
    "EventClient",
    "EventContext",
    "EventEnvelope",
    "EventStream",
    "EventStreamWriter",
    "FunctionPool",
    "FunctionRegistry",
    "FunctionSpec",
    "Handler",
    "LocalBus",
    "MeshCounters",
    "Platform",
    "PostOffice",
    "RemoteRouter",
    "RouteListener",
    "RouteStats",
    "RoutingView",
    "Span",
    "StreamCancelled",
    "StreamData",
    "SyncEventStream",
    "SyncPostOffice",
    "Tracer",
    "bin_header",
    "contract",
    "contract_hints",
    "current_event",
    "current_platform",
    "current_span",
    "decode",
    "decode_pieces",
    "default_registry",
    "elapsed_text",
    "encode",
    "encode_split",
    "envelope_from_map",
    "envelope_to_map",
    "error_body",
    "error_message",
    "exception_segment",
    "iso_utc_ms",
    "make_spec",
    "new_event_id",
    "new_origin",
    "pack",
    "route",
    "running_platforms",
    "schema_of",
    "stamp",
    "stream_signal",
    "to_plain",
    "utc_now_iso",
    "validate_route_name",
]
