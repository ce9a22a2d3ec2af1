"""`GET /metrics`: Prometheus text format, from counters the platform keeps anyway, read at scrape time.

The event bus never calls prometheus-client: each function's pool keeps a :class:`meshkit.core.RouteStats` (a
few list and dict increments per execution) and a collector turns those, the pools' queue depth and busy
instances and the mesh's counters (`platform.remote.counters()`) into metric families when Prometheus
scrapes. Each app has a registry of its own (``app.state.metrics_registry``), so two apps in one process
never clash.

Metrics: ``meshkit_requests_total{route}``, ``meshkit_errors_total{route,status}``,
``meshkit_request_seconds{route}`` (histogram of execution time), ``meshkit_queue_depth{route}``,
``meshkit_busy_workers{route}``, ``meshkit_instances{route}``, ``meshkit_refused_total{route}``,
``meshkit_connector_records_total{direction="sent|received|skipped"}``, ``meshkit_connector_pending_sends``
(records handed to the connector and not yet acknowledged), plus the process and GC collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from meshkit.core import Platform


def _le(bound: float) -> str:
    # what prometheus-client writes for these bounds: 0.005, 1.0, 10.0, +Inf
    return "+Inf" if bound == float("inf") else repr(float(bound))


class MeshkitCollector(Collector):
    """The platform's functions and connector, as metric families (built at every scrape)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected on demand only: no describe-time call into a platform not started

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "meshkit_requests", "Executions of each function (events handled)", labels=["route"]
        )
        errors = CounterMetricFamily(
            "meshkit_errors", "Executions that ended with an error status", labels=["route", "status"]
        )
        latency = HistogramMetricFamily(
            "meshkit_request_seconds", "Execution time of each function in seconds", labels=["route"]
        )
        depth = GaugeMetricFamily("meshkit_queue_depth", "Events waiting for an instance", labels=["route"])
        busy = GaugeMetricFamily("meshkit_busy_workers", "Instances running an event now", labels=["route"])
        instances = GaugeMetricFamily("meshkit_instances", "Instances (concurrency bound)", labels=["route"])
        refused = CounterMetricFamily(
            "meshkit_refused", "Events refused with 503 because the queue was full", labels=["route"]
        )
        expired = CounterMetricFamily(
            "meshkit_expired",
            "Events answered 408 and never run: their deadline passed before an instance was free",
            labels=["route"],
        )
        streams = CounterMetricFamily(
            "meshkit_streams", "Streams a streaming function produced to their end", labels=["route"]
        )
        segments = CounterMetricFamily(
            "meshkit_stream_segments", "Data segments a streaming function sent", labels=["route"]
        )
        segment_bytes = CounterMetricFamily(
            "meshkit_stream_bytes",
            "Bytes of data in the segments a streaming function sent",
            labels=["route"],
        )
        platform = self.platform
        for spec in platform.functions():
            pool = platform.pool(spec.route)
            if pool is None:
                continue
            stats = pool.stats
            route = [spec.route]
            requests.add_metric(route, stats.count)
            for status, count in sorted(stats.errors.items()):
                errors.add_metric([spec.route, str(status)], count)
            buckets = [(_le(bound), float(count)) for bound, count in stats.cumulative()]
            latency.add_metric(route, buckets, stats.seconds)
            depth.add_metric(route, pool.queue_depth)
            busy.add_metric(route, pool.busy)
            instances.add_metric(route, spec.instances)
            refused.add_metric(route, pool.refused)
            expired.add_metric(route, pool.expired)
            if spec.streaming:
                streams.add_metric(route, stats.streams)
                segments.add_metric(route, stats.segments)
                segment_bytes.add_metric(route, stats.segment_bytes)
        yield from (requests, errors, latency, depth, busy, instances, refused, expired)
        yield from (streams, segments, segment_bytes)
        open_streams = GaugeMetricFamily("meshkit_streams_open", "Streams in progress here", labels=["side"])
        open_streams.add_metric(["producing"], len(platform.streams.outlets))
        open_streams.add_metric(["reading"], len(platform.streams.readers))
        yield open_streams
        yield CounterMetricFamily(
            "meshkit_retries", "Requests sent again to another instance", value=platform.retries
        )
        yield CounterMetricFamily(
            "meshkit_retries_refused",
            "Retries the retry budget did not allow",
            value=platform.retry_budget.refused,
        )
        yield CounterMetricFamily(
            "meshkit_late_replies",
            "Replies that came after their caller stopped waiting: dropped",
            value=platform.late_replies,
        )
        yield GaugeMetricFamily("meshkit_draining", "1 while the app drains", value=int(platform.draining))
        if platform.remote is not None:
            counters = platform.remote.counters()
            records = CounterMetricFamily(
                "meshkit_connector_records", "Event records through the connector", labels=["direction"]
            )
            records.add_metric(["sent"], counters.sent)
            records.add_metric(["received"], counters.received)
            records.add_metric(["skipped"], counters.skipped)
            yield records
            direct = CounterMetricFamily(
                "meshkit_direct_records", "Event records over direct links to peers", labels=["direction"]
            )
            direct.add_metric(["sent"], counters.direct_sent)
            direct.add_metric(["received"], counters.direct_received)
            yield direct
            yield GaugeMetricFamily(
                "meshkit_direct_links", "Direct links to peers open now", value=counters.direct_links
            )
            yield CounterMetricFamily(
                "meshkit_outlier_ejections",
                "Peers taken out of this app's rotation, failing or not answering",
                value=counters.ejections,
            )
            yield GaugeMetricFamily(
                "meshkit_connector_pending_sends",
                "Records handed to the connector and not yet acknowledged by the broker",
                value=counters.pending,
            )


class _Gauge(Collector):
    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self.name, self.documentation, self.value = name, documentation, value

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.value())


def make_registry(platform: Platform) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshkitCollector(platform))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def install_metrics(app: FastAPI, platform: Platform) -> CollectorRegistry:
    """A registry of the app's own (``app.state.metrics_registry``) and ``GET /metrics``."""
    registry = make_registry(platform)
    app.state.metrics_registry = registry
    router = APIRouter(tags=["actuators"])

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.router.routes.extend(router.routes)  # its routes, not the router: see meshkit.http.install
    return registry


def add_gauge(app: Any, name: str, documentation: str, value: Callable[[], float]) -> None:
    """Export ``value()`` as the gauge `name` on the app's ``/metrics`` (read at every scrape)."""
    registry: CollectorRegistry = app.state.metrics_registry
    registry.register(_Gauge(name, documentation, value))
