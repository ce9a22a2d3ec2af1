"""`GET /metrics` (issue 6.2): Prometheus text from the functions, the connector and the presence monitor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from meshkit import AppError, EventEnvelope, FunctionRegistry, PostOffice, create_app
from meshkit.core import LATENCY_BUCKETS
from meshkit.mesh._frames import event_record
from meshkit.observe import make_registry
from meshkit.testing import running_platform
from tests.support.eventually import eventually
from tests.support.identities import PUBLIC_KEY
from tests.support.observability import two_platform_mesh
from tests.support.servers import UvicornProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    result: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def value(scrape: Samples, name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metrics.test") as client:
            yield client


def _functions() -> tuple[FunctionRegistry, asyncio.Event]:
    registry = FunctionRegistry()
    release = asyncio.Event()

    @registry.route("ok.route", instances=4)
    async def ok(body: Any) -> Any:
        return body

    @registry.route("fail.conflict")
    async def conflict(body: Any) -> None:
        raise AppError(409, "Already exists")

    @registry.route("fail.crash")
    def crash(body: Any) -> None:
        raise RuntimeError("boom")

    @registry.route("slow.route")
    async def slow(body: Any) -> str:
        await asyncio.sleep(0.12)
        return "slept"

    @registry.route("blocked.route", instances=1)
    async def blocked(body: Any) -> str:
        await release.wait()
        return "released"

    return registry, release


async def test_counts_errors_latency_queue_depth_and_busy_workers_per_route() -> None:
    registry, release = _functions()
    async with running_platform(registry) as platform:
        metrics = make_registry(platform)

        def scrape() -> Samples:
            return samples(generate_latest(metrics).decode())

        po = PostOffice(platform)
        for n in range(3):
            assert (await po.request("ok.route", n)).status == 200
        for _ in range(2):
            assert (await po.request("fail.conflict", None)).status == 409
        assert (await po.request("fail.crash", None)).status == 500
        await po.send("fail.conflict", None)  # drop-and-forget errors count too
        assert (await po.request("slow.route", None)).body == "slept"
        for n in range(4):  # one runs and blocks, three wait
            await po.send("blocked.route", n)
        pool = platform.pool("blocked.route")
        assert pool is not None
        await eventually(lambda: (pool.busy, pool.queue_depth) == (1, 3), what="one running, three waiting")
        blocked = scrape()
        release.set()
        await eventually(lambda: pool.queue_depth == pool.busy == 0, what="the four run")
        after = scrape()

    assert value(blocked, "meshkit_queue_depth", route="blocked.route") == 3
    assert value(blocked, "meshkit_busy_workers", route="blocked.route") == 1
    assert value(blocked, "meshkit_instances", route="blocked.route") == 1
    assert value(blocked, "meshkit_requests_total", route="blocked.route") == 0
    assert value(after, "meshkit_queue_depth", route="blocked.route") == 0
    assert value(after, "meshkit_busy_workers", route="blocked.route") == 0
    assert value(after, "meshkit_requests_total", route="blocked.route") == 4

    assert value(after, "meshkit_requests_total", route="ok.route") == 3
    assert value(after, "meshkit_requests_total", route="fail.conflict") == 3
    assert value(after, "meshkit_errors_total", route="fail.conflict", status="409") == 3
    assert value(after, "meshkit_errors_total", route="fail.crash", status="500") == 1
    assert not [key for key in after if key[0] == "meshkit_errors_total" and ("route", "ok.route") in key[1]]
    # the histogram: cumulative buckets, +Inf = count, and the slow one lands above 0.1 s
    buckets = [
        value(after, "meshkit_request_seconds_bucket", route="ok.route", le=repr(b)) for b in LATENCY_BUCKETS
    ]
    assert (
        buckets == sorted(buckets)
        and value(after, "meshkit_request_seconds_bucket", route="ok.route", le="+Inf") == 3
    )
    assert value(after, "meshkit_request_seconds_count", route="ok.route") == 3
    assert value(after, "meshkit_request_seconds_bucket", route="ok.route", le="0.05") == 3
    assert value(after, "meshkit_request_seconds_bucket", route="slow.route", le="0.1") == 0
    assert value(after, "meshkit_request_seconds_bucket", route="slow.route", le="+Inf") == 1
    slow_sum = value(after, "meshkit_request_seconds_sum", route="slow.route")
    assert slow_sum is not None and slow_sum >= 0.12


async def test_every_app_serves_its_own_metrics_in_the_prometheus_text_format() -> None:
    first, _ = _functions()
    second = FunctionRegistry()

    @second.route("other.route")
    async def other(body: Any) -> Any:
        return body

    app_one = create_app(name="metrics-one", functions=first)
    app_two = create_app(name="metrics-two", functions=second)
    async with serving(app_one) as one, serving(app_two) as two:
        await PostOffice(app_one.state.platform).request("ok.route", 1)
        await PostOffice(app_two.state.platform).request("other.route", 1)
        await PostOffice(app_two.state.platform).request("other.route", 2)
        response_one, response_two = await one.get("/metrics"), await two.get("/metrics")
    assert response_one.status_code == 200 and response_one.headers["content-type"] == CONTENT_TYPE_LATEST
    scrape_one, scrape_two = samples(response_one.text), samples(response_two.text)
    assert value(scrape_one, "meshkit_requests_total", route="ok.route") == 1
    assert value(scrape_one, "meshkit_requests_total", route="other.route") is None
    assert value(scrape_two, "meshkit_requests_total", route="other.route") == 2
    assert value(scrape_two, "meshkit_requests_total", route="ok.route") is None
    assert "# TYPE meshkit_request_seconds histogram" in response_one.text
    assert "process_cpu_seconds_total" in response_one.text  # the process collector, per app registry
    # no connector: no connector metrics
    assert "meshkit_connector_records_total" not in response_one.text


async def test_connector_records_sent_received_and_skipped() -> None:
    caller, callee = FunctionRegistry(), FunctionRegistry()

    @callee.route("remote.echo")
    async def echo(body: Any) -> Any:
        return body

    async with two_platform_mesh(caller, callee) as (a, b, transports):
        for n in range(5):
            assert (await PostOffice(a).request("remote.echo", n, timeout=3)).body == n
        # a record on a's partition addressed to somebody else: skipped, not delivered
        stray = event_record("20260101" + "f" * 32, EventEnvelope("remote.echo", 1), None)
        await transports[1].connector.publish(transports[0].topic.topic, transports[0].topic.partition, stray)
        await eventually(lambda: transports[0].skipped, what="the stray record skipped at a")
        on_a = samples(generate_latest(make_registry(a)).decode())
        on_b = samples(generate_latest(make_registry(b)).decode())
    records = "meshkit_connector_records_total"
    assert value(on_a, records, direction="sent") == 5 and value(on_a, records, direction="received") == 5
    assert value(on_a, records, direction="skipped") == 1
    assert value(on_b, records, direction="received") == 5 and value(on_b, records, direction="sent") == 5
    assert value(on_b, records, direction="skipped") == 0
    assert value(on_a, "meshkit_connector_pending_sends") == 0
    assert value(on_b, "meshkit_requests_total", route="remote.echo") == 5


async def test_the_presence_monitor_counts_its_connections() -> None:
    properties = {"cloud.connector": "none", "monitor.heartbeat": "0.2"}
    with UvicornProcess("presence_server.main:app", properties=properties) as monitor:

        async def connections() -> float | None:
            response = await asyncio.to_thread(httpx.get, monitor.url + "/metrics")
            assert response.status_code == 200
            return value(samples(response.text), "meshkit_presence_connections")

        assert await connections() == 0
        origin = "20261125" + "c3" * 16
        hello = {"type": "hello", "name": "metrics-app", "version": "1.0", "personality": "APP", "group": 1}
        async with connect(f"ws://127.0.0.1:{monitor.port}/ws/presence/{origin}") as ws:
            await ws.send(json.dumps(hello | {"created": "2026-11-25T10:00:00.000Z", "key": PUBLIC_KEY}))
            assert json.loads(await ws.recv())["type"] == "ready"

            async def counted() -> bool:
                return await connections() == 1

            await eventually(counted, what="the connection in /metrics", describe=monitor.log_tail)


async def test_expired_events_late_replies_retries_and_ejections_are_counted() -> None:
    registry = FunctionRegistry()
    release = asyncio.Event()

    @registry.route("one.at.a.time", instances=1)
    async def single(body: Any) -> str:
        await release.wait()
        return "done"

    async with running_platform(registry) as platform:
        metrics = make_registry(platform)
        po = PostOffice(platform)
        first = asyncio.create_task(po.request("one.at.a.time", timeout=5))
        await asyncio.sleep(0.01)
        late = await po.request("one.at.a.time", timeout=0.05, timeout_as_reply=True)  # expires queued
        assert late.status == 408
        release.set()
        await first
        await asyncio.sleep(0.01)
        scrape = samples(generate_latest(metrics).decode())
    assert value(scrape, "meshkit_expired_total", route="one.at.a.time") == 1
    assert value(scrape, "meshkit_late_replies_total") == 1  # the 408 it answered, after the caller gave up
    assert value(scrape, "meshkit_retries_total") == 0
    assert value(scrape, "meshkit_retries_refused_total") == 0
    assert value(scrape, "meshkit_draining") == 0


async def test_streams_segments_and_bytes_are_counted_per_route_and_open_streams_shown() -> None:
    registry = FunctionRegistry()
    release = asyncio.Event()

    @registry.route("counted.stream")
    async def counted(body: Any) -> AsyncIterator[bytes]:
        yield b"12345"
        yield b"678"
        await release.wait()

    async with running_platform(registry) as platform:
        metrics = make_registry(platform)
        stream = PostOffice(platform).stream("counted.stream")
        await anext(stream)
        open_now = samples(generate_latest(metrics).decode())
        release.set()
        rest = [segment async for segment in stream]
        scrape = samples(generate_latest(metrics).decode())
    assert value(open_now, "meshkit_streams_open", side="producing") == 1
    assert value(open_now, "meshkit_streams_open", side="reading") == 1
    assert len(rest) == 2  # the second segment and the end
    assert value(scrape, "meshkit_streams_total", route="counted.stream") == 1
    assert value(scrape, "meshkit_stream_segments_total", route="counted.stream") == 2
    assert value(scrape, "meshkit_stream_bytes_total", route="counted.stream") == 8
    assert value(scrape, "meshkit_streams_open", side="producing") == 0
