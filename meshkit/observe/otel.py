"""OpenTelemetry spans for traced events (the ``otel`` extra: ``pip install 'meshkit[otel]'``).

With ``tracing.otel=true`` every execution of a function on a traced event is a span, child of the span of the
execution (or the HTTP request) that sent the event, in this process or another: the envelope's ``span_id``
carries the link. The HTTP edge opens a server span per traced request.

Spans go to the tracer provider of :func:`use_tracer_provider` if one was given, else to one meshkit makes for
``tracing.otel.exporter=console|otlp`` (the latter needs ``opentelemetry-exporter-otlp``), else to the
application's global provider (``opentelemetry.trace.set_tracer_provider``).

A meshkit trace id that is not 32 hex characters (an ``X-Trace-Id`` of another shape) maps to an OpenTelemetry
trace id by hashing, the same in every process; the first execution of a trace with no parent span gets a
parent id derived the same way.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from meshkit.__version__ import __version__
from meshkit.observe._ids import new_span_id

if TYPE_CHECKING:
    from meshkit.core import EventEnvelope, Platform

__all__ = ["OtelBridge", "otel_trace_id", "use_tracer_provider"]

log = logging.getLogger("meshkit.otel")

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_override: trace.TracerProvider | None = None


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Send meshkit's spans to `provider` (None: back to the configured or global one)."""
    global _override
    _override = provider


def otel_trace_id(trace_id: str) -> int:
    """The 128-bit OpenTelemetry trace id of a meshkit trace id."""
    if _HEX32.fullmatch(trace_id) and int(trace_id, 16):
        return int(trace_id, 16)
    return int.from_bytes(hashlib.md5(trace_id.encode(), usedforsecurity=False).digest(), "big") or 1


def _root_span_id(trace_id: str) -> int:
    digest = hashlib.md5(b"meshkit-root:" + trace_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") or 1


def _parent_context(trace_id: str, span_id: str | None) -> otel_context.Context:
    parent = int(span_id, 16) if span_id is not None and _HEX16.fullmatch(span_id) else 0
    remote = SpanContext(
        trace_id=otel_trace_id(trace_id),
        span_id=parent or _root_span_id(trace_id),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


class OtelBridge:
    """The platform's way to OpenTelemetry: makes, links and ends the spans."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._own: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._tracer_of: object = None
        self._warned = False
        exporter = (platform.config.get("tracing.otel.exporter", "") or "").strip().lower()
        if exporter:
            self._own = self._make_provider(exporter)

    def _make_provider(self, exporter: str) -> trace.TracerProvider | None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        chosen: SpanExporter
        if exporter == "console":
            chosen = ConsoleSpanExporter()
        elif exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning("tracing.otel.exporter=otlp needs opentelemetry-exporter-otlp-proto-http")
                return None
            chosen = OTLPSpanExporter()
        else:
            log.warning("tracing.otel.exporter=%s: expected console or otlp", exporter)
            return None
        resource = Resource.create(
            {"service.name": self.platform.name, "service.instance.id": self.platform.origin}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(chosen))

        async def flush() -> None:
            provider.shutdown()

        self.platform.on_shutdown(flush)
        return provider

    def tracer(self) -> trace.Tracer:
        provider = _override or self._own or trace.get_tracer_provider()
        if self._tracer is None or self._tracer_of is not provider:
            if isinstance(provider, trace.ProxyTracerProvider) and not self._warned:
                self._warned = True
                log.info(
                    "tracing.otel=true: spans go to the global OpenTelemetry tracer provider "
                    "(set one, or tracing.otel.exporter=console|otlp)"
                )
            self._tracer, self._tracer_of = provider.get_tracer("meshkit", __version__), provider
        return self._tracer

    # -- spans ---------------------------------------------------------------------------------------------
    @staticmethod
    def span_id(span: trace.Span) -> str:
        span_id = span.get_span_context().span_id
        if not span_id:  # a no-op tracer: ids of our own keep the links in the trace records
            return new_span_id()
        return f"{span_id:016x}"

    @staticmethod
    def trace_id_of(span: trace.Span) -> str | None:
        trace_id = span.get_span_context().trace_id
        return f"{trace_id:032x}" if trace_id else None

    def start(self, route: str, event: EventEnvelope, parent: str | None) -> trace.Span:
        """The span of one execution of `route` on a traced event, child of the span `parent`."""
        assert event.trace_id is not None
        attributes: dict[str, Any] = {
            "meshkit.route": route,
            "meshkit.origin": self.platform.origin,
            "meshkit.app": self.platform.name,
            "meshkit.trace_id": event.trace_id,
        }
        if event.trace_path is not None:
            attributes["meshkit.trace_path"] = event.trace_path
        if event.sender is not None:
            attributes["meshkit.from"] = event.sender
        return self.tracer().start_span(
            route,
            context=_parent_context(event.trace_id, parent),
            kind=SpanKind.SERVER if event.reply_to is not None else SpanKind.CONSUMER,
            attributes=attributes,
        )

    @staticmethod
    def attach(span: trace.Span) -> object:
        """Make `span` the current OpenTelemetry span (user code in the handler nests its spans under it)."""
        return otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def detach(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def end(span: trace.Span, record: Mapping[str, Any]) -> None:
        status = int(record["status"])
        span.set_attribute("meshkit.status", status)
        span.set_attribute("meshkit.exec_time_ms", float(record["exec_time"]))
        if "segments" in record:  # a stream's one span
            span.set_attribute("meshkit.stream.segments", int(record["segments"]))
            span.set_attribute("meshkit.stream.bytes", int(record["bytes"]))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, str(record.get("exception", ""))[:200]))
        elif "exception" in record:
            span.set_attribute("meshkit.exception", str(record["exception"])[:200])
        span.end()

    # -- the HTTP edge -------------------------------------------------------------------------------------
    def start_edge(
        self, trace_path: str, trace_id: str | None, parent: str | None, scope: Mapping[str, Any]
    ) -> trace.Span:
        parent_context = _parent_context(trace_id, parent) if trace_id is not None else None
        method, _, path = trace_path.partition(" ")
        origin = self.platform.origin
        return self.tracer().start_span(
            trace_path,
            context=parent_context,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path, "meshkit.origin": origin},
        )

    @staticmethod
    def end_edge(span: trace.Span, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
