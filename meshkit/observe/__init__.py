"""Observability, plugged into the core's hooks: tracing (and OpenTelemetry), Prometheus metrics, logs.

The core never imports this package: `instrument(platform)` gives a platform its tracer and log context, and
the HTTP layer adds the tracing middleware and `/metrics` (`install_tracing`, `install_metrics`).
OpenTelemetry, with the `otel` extra, is in :mod:`meshkit.observe.otel`.
"""

from meshkit.observe._edge import TracingMiddleware, install_tracing, trace_response_header
from meshkit.observe._ids import (
    TRACE_HEADER,
    TRACEPARENT_HEADER,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    trace_headers,
    valid_trace_id,
)
from meshkit.observe._logging import JsonFormatter, log_format, set_log_origin, setup_logging
from meshkit.observe._metrics import MeshkitCollector, add_gauge, install_metrics, make_registry
from meshkit.observe._plug import instrument
from meshkit.observe._tracing import Span, Tracer

__all__ = [
    "TRACEPARENT_HEADER",
    "TRACE_HEADER",
    "JsonFormatter",
    "MeshkitCollector",
    "Span",
    "Tracer",
    "TracingMiddleware",
    "add_gauge",
    "format_traceparent",
    "install_metrics",
    "install_tracing",
    "instrument",
    "log_format",
    "make_registry",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "set_log_origin",
    "setup_logging",
    "trace_headers",
    "trace_response_header",
    "valid_trace_id",
]
