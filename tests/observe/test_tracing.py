"""Distributed tracing (issue 6.1): the HTTP edge, the trace over the bus, the mesh and Event over HTTP, the
trace records in the log and at the forwarder, and OpenTelemetry spans with their parent/child links."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from meshkit import (
    AppError,
    EventEnvelope,
    FunctionRegistry,
    Platform,
    PostOffice,
    create_app,
    decode,
    encode,
)
from meshkit.observe import format_traceparent, parse_traceparent
from meshkit.testing import running_platform
from tests.support.eventually import eventually
from tests.support.observability import FORWARDER, trace_collector, two_platform_mesh
from tests.support.servers import UvicornProcess

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _listen(name: str, level: int) -> Iterator[list[logging.LogRecord]]:
    """The records of logger `name` at `level`, however the process configured logging before."""
    logger, handler = logging.getLogger(name), _Lines()
    old_level = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def trace_lines() -> Iterator[list[logging.LogRecord]]:
    """The records of the `meshkit.trace` log (a trace record as JSON in each message)."""
    yield from _listen("meshkit.trace", logging.INFO)


def parsed(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    return [json.loads(record.getMessage()) for record in records]


@pytest.fixture
def debug_lines() -> Iterator[list[logging.LogRecord]]:
    yield from _listen("meshkit.tracing", logging.DEBUG)


MARKER = {"route": "marker", "forwarded_with_trace": None}


async def through_the_forwarder(platform: Platform, forwarded: list[dict[str, Any]]) -> None:
    """Send the forwarder an untraced marker and wait for it: what it queued before has been collected."""
    await PostOffice(platform).send(FORWARDER, {"route": "marker"})
    await eventually(lambda: MARKER in forwarded, what="the marker at the forwarder")
    assert forwarded.pop() == MARKER, forwarded  # nothing after the marker either


def by_route(records: Any) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for record in records:
        assert record["route"] not in result, f"two records for {record['route']}"
        result[record["route"]] = record
    return result


# -- traceparent ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
        (f"  00-{TRACE}-{PARENT}-03 ", (TRACE, PARENT, True)),
        (f"01-{TRACE}-{PARENT}-01-what-a-later-version-adds", (TRACE, PARENT, True)),
    ],
)
def test_good_traceparent_headers_are_parsed(header: str, expected: tuple[str, str, bool]) -> None:
    assert parse_traceparent(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{TRACE}-{PARENT}",  # no flags
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE.upper()}-{PARENT}-01",  # uppercase hex
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
        f"00-{TRACE}-{PARENT}x-01",
        f"0-{TRACE}-{PARENT}-01",
        f"00_{TRACE}_{PARENT}_01",
    ],
)
def test_bad_traceparent_headers_are_refused(header: str) -> None:
    assert parse_traceparent(header) is None


def test_a_traceparent_is_written_only_for_w3c_shaped_ids() -> None:
    assert format_traceparent(TRACE, PARENT) == f"00-{TRACE}-{PARENT}-01"
    assert format_traceparent("my-own-trace-id", PARENT) is None
    assert format_traceparent(TRACE, None) is None


# -- the trace on the bus ------------------------------------------------------------------------------------
def _hops(registry: FunctionRegistry) -> None:
    @registry.route("hop.a")
    async def hop_a(headers: dict[str, str], body: Any) -> Any:
        po = PostOffice()
        await po.send("hop.sink", "fire and forget")
        reply = await po.request("hop.b", body)
        return {"a": headers.get("my_trace_id"), **reply.body}

    @registry.route("hop.b", instances=2)
    async def hop_b(headers: dict[str, str], body: Any) -> Any:
        await asyncio.sleep(0.01)  # suspends: finished by a task of its own, not inline
        reply = await PostOffice().request("hop.c", body)
        return {"b": headers.get("my_trace_id"), **reply.body}

    @registry.route("hop.c")
    def hop_c(headers: dict[str, str], body: Any) -> Any:  # plain def: a worker thread
        return {"c": headers.get("my_trace_id"), "c_path": headers.get("my_trace_path")}

    @registry.route("hop.sink")
    async def hop_sink(body: Any) -> None:
        return None


async def test_a_trace_follows_every_hop_on_the_bus(trace_lines: list[logging.LogRecord]) -> None:
    registry = FunctionRegistry()
    _hops(registry)
    forwarded = trace_collector(registry)
    async with running_platform(registry, properties={"distributed.trace.forwarder": FORWARDER}) as platform:
        po = PostOffice(platform, trace_id=TRACE, trace_path="GET /api/hops")
        reply = await po.request("hop.a", "hi")
        await eventually(lambda: len(forwarded) == 4)
        await through_the_forwarder(platform, forwarded)  # the forwarder's own executions are not traced
    assert reply.body == {"a": TRACE, "b": TRACE, "c": TRACE, "c_path": "GET /api/hops"}
    assert (reply.trace_id, reply.trace_path) == (TRACE, "GET /api/hops")

    records = by_route(forwarded)
    assert set(records) == {"hop.a", "hop.b", "hop.c", "hop.sink"}
    a, b, c, sink = (records[r] for r in ("hop.a", "hop.b", "hop.c", "hop.sink"))
    for record in records.values():
        assert record["trace_id"] == TRACE and record["trace_path"] == "GET /api/hops"
        assert record["origin"] == platform.origin and record["app"] == "test-app"
        assert record["status"] == 200 and record["success"] is True and "exception" not in record
        assert ISO_MS.fullmatch(record["start"])
        assert 0 <= record["exec_time"] <= record["round_trip"] + 0.01
        assert HEX16.fullmatch(record["span_id"])
        assert record["forwarded_with_trace"] is None  # the record travels untraced
    # who called whom: the parent span and the sender of each execution
    assert a["parent_span_id"] is None and a["from"] is None
    assert (b["parent_span_id"], b["from"]) == (a["span_id"], "hop.a")
    assert (c["parent_span_id"], c["from"]) == (b["span_id"], "hop.b")
    assert (sink["parent_span_id"], sink["from"]) == (a["span_id"], "hop.a")
    assert b["exec_time"] >= 10  # it slept 10 ms
    assert len({r["span_id"] for r in records.values()}) == 4
    # the log has the same records, one line each
    logged = by_route(parsed(trace_lines))
    assert set(logged) == set(records)
    assert logged["hop.b"] == {k: v for k, v in b.items() if k != "forwarded_with_trace"}


async def test_errors_and_the_wait_in_the_queue_are_in_the_record() -> None:
    registry = FunctionRegistry()
    forwarded = trace_collector(registry)
    release = asyncio.Event()

    @registry.route("fail.conflict")
    async def conflict(body: Any) -> None:
        raise AppError(409, "Already exists")

    @registry.route("fail.crash")
    def crash(body: Any) -> None:
        raise RuntimeError("boom")

    started = asyncio.Event()

    @registry.route("one.at.a.time", instances=1)
    async def one(body: Any) -> str:
        if body == "first":
            started.set()
            await release.wait()
        return "done"

    async with running_platform(registry, properties={"distributed.trace.forwarder": FORWARDER}) as platform:
        po = PostOffice(platform, trace_id="order-17", trace_path="POST /api/orders")
        assert (await po.request("fail.conflict", None)).status == 409
        assert (await po.request("fail.crash", None)).status == 500
        first = asyncio.create_task(po.request("one.at.a.time", "first"))
        await asyncio.wait_for(started.wait(), 5)
        second = asyncio.create_task(po.request("one.at.a.time", "second"))  # waits in the queue
        await asyncio.sleep(0.15)  # the wait in the queue that the record measures
        release.set()
        await asyncio.gather(first, second)
        await eventually(lambda: len(forwarded) == 4)
    records = {(r["route"], r["exec_time"] > 100): r for r in forwarded}
    conflict_record = records[("fail.conflict", False)]
    assert conflict_record["status"] == 409 and conflict_record["success"] is False
    assert conflict_record["exception"] == "Already exists" and conflict_record["trace_id"] == "order-17"
    crash_record = records[("fail.crash", False)]
    assert crash_record["status"] == 500 and crash_record["exception"] == "boom"
    waited = records[("one.at.a.time", False)]  # the second: quick to run, long to wait
    assert (
        waited["round_trip"] >= 100 and waited["round_trip"] - waited["exec_time"] >= 100
    )  # waited, not ran
    blocked = records[("one.at.a.time", True)]
    assert blocked["exec_time"] >= 100


async def test_untraced_events_and_the_forwarder_itself_leave_no_record(
    trace_lines: list[logging.LogRecord],
) -> None:
    registry = FunctionRegistry()
    _hops(registry)
    forwarded = trace_collector(registry)
    async with running_platform(registry, properties={"distributed.trace.forwarder": FORWARDER}) as platform:
        reply = await PostOffice(platform).request("hop.a", "hi")
        assert reply.body["a"] is None and reply.trace_id is None
        # a traced event to the forwarder is not traced either (it would feed itself)
        await PostOffice(platform, trace_id=TRACE).send(FORWARDER, {"route": "by.hand"})
        await eventually(lambda: len(forwarded) == 1)
        await through_the_forwarder(platform, forwarded)
    assert forwarded == [{"route": "by.hand", "forwarded_with_trace": TRACE}]
    assert len(trace_lines) == 0


async def test_a_missing_forwarder_is_reported_once_and_the_log_still_gets_the_records(
    trace_lines: list[logging.LogRecord], caplog: pytest.LogCaptureFixture
) -> None:
    registry = FunctionRegistry()
    _hops(registry)
    async with running_platform(
        registry, properties={"distributed.trace.forwarder": "no.such.route"}
    ) as platform:
        for _ in range(3):
            await PostOffice(platform, trace_id=TRACE).request("hop.c", None)
    assert len(trace_lines) == 3
    warnings = [r for r in caplog.records if "not forwarded" in r.getMessage()]
    assert len(warnings) == 1 and "no.such.route" in warnings[0].getMessage()


async def test_the_trace_crosses_the_mesh_with_its_span_links() -> None:
    caller, callee = FunctionRegistry(), FunctionRegistry()
    forwarded_a = trace_collector(caller)

    platforms: dict[str, Platform] = {}

    @caller.route("mesh.caller")
    async def mesh_caller(headers: dict[str, str], body: Any) -> Any:
        # two platforms in one process: name the caller's (the trace still comes from the running event)
        reply = await PostOffice(platforms["a"]).request("mesh.callee", body, timeout=3)
        return reply.body

    @callee.route("mesh.callee")
    async def mesh_callee(headers: dict[str, str], body: Any) -> Any:
        return {"trace_id": headers.get("my_trace_id"), "path": headers.get("my_trace_path")}

    forwarded_b = trace_collector(callee)
    props = {"distributed.trace.forwarder": FORWARDER}
    async with two_platform_mesh(caller, callee, **props) as (a, b, transports):
        platforms["a"] = a
        reply = await PostOffice(a, trace_id=TRACE, trace_path="GET /api/mesh").request("mesh.caller", 1)
        await eventually(lambda: len(forwarded_a) == 1 and len(forwarded_b) == 1)
        assert transports[0].sent >= 1 and transports[1].received >= 1
    assert reply.body == {"trace_id": TRACE, "path": "GET /api/mesh"}
    (on_a,), (on_b,) = forwarded_a, forwarded_b
    assert (on_a["route"], on_a["origin"]) == ("mesh.caller", a.origin)
    assert (on_b["route"], on_b["origin"]) == ("mesh.callee", b.origin)
    assert on_b["trace_id"] == TRACE and on_b["parent_span_id"] == on_a["span_id"]
    assert on_b["from"] == "mesh.caller"


# -- the HTTP edge -------------------------------------------------------------------------------------------
def _edge_app(**properties: str) -> tuple[FastAPI, list[dict[str, Any]]]:
    registry = FunctionRegistry()
    _hops(registry)
    forwarded = trace_collector(registry)
    app = create_app(
        name="edge-app",
        functions=registry,
        properties={"distributed.trace.forwarder": FORWARDER, **properties},
    )

    @app.get("/api/hops/{n}")
    async def hops(n: int) -> Any:
        return (await PostOffice().request("hop.c", n)).body

    @app.get("/other")
    async def other() -> Any:
        return (await PostOffice().request("hop.c", None)).body

    return app, forwarded


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that calls it in process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
            yield client


async def test_the_edge_continues_a_w3c_trace_and_answers_with_the_trace_id() -> None:
    app, forwarded = _edge_app()
    async with serving(app) as client:
        response = await client.get("/api/hops/7", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        await eventually(lambda: len(forwarded) == 1)
    assert response.status_code == 200 and response.headers["x-trace-id"] == TRACE
    assert response.json() == {"c": TRACE, "c_path": "GET /api/hops/7"}
    (record,) = forwarded
    assert record["route"] == "hop.c" and record["parent_span_id"] == PARENT  # the caller's span


async def test_the_edge_continues_an_x_trace_id() -> None:
    app, _ = _edge_app()
    async with serving(app) as client:
        response = await client.get("/api/hops/1", headers={"X-Trace-Id": "order-42:a"})
        both = await client.get(
            "/api/hops/2", headers={"X-Trace-Id": TRACE, "traceparent": f"00-{TRACE}-{PARENT}-01"}
        )
    assert response.headers["x-trace-id"] == "order-42:a" and response.json()["c"] == "order-42:a"
    assert both.headers["x-trace-id"] == TRACE and both.json()["c"] == TRACE


async def test_a_bad_trace_header_starts_a_new_trace(debug_lines: list[logging.LogRecord]) -> None:
    app, _ = _edge_app()
    async with serving(app) as client:
        bad_parent = await client.get(
            "/api/hops/1", headers={"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"}
        )
        bad_id = await client.get("/api/hops/1", headers={"X-Trace-Id": "has spaces in it"})
    for response in (bad_parent, bad_id):
        new = response.headers["x-trace-id"]
        assert HEX32.fullmatch(new) and new != TRACE
        assert response.json()["c"] == new
    assert bad_parent.headers["x-trace-id"] != bad_id.headers["x-trace-id"]
    messages = [r.getMessage() for r in debug_lines]
    assert any(m.startswith("Ignored an invalid traceparent header") for m in messages)
    assert any(m.startswith("Ignored an invalid X-Trace-Id header") for m in messages)


async def test_without_headers_the_config_switches_decide() -> None:
    plain, _ = _edge_app()
    async with serving(plain) as client:
        response = await client.get("/api/hops/1")
    assert "x-trace-id" not in response.headers and response.json()["c"] is None

    by_path, _ = _edge_app(**{"tracing.paths": "/api/, /v2/"})
    async with serving(by_path) as client:
        traced = await client.get("/api/hops/3")
        other = await client.get("/other")
    assert HEX32.fullmatch(traced.headers["x-trace-id"])
    assert traced.json() == {"c": traced.headers["x-trace-id"], "c_path": "GET /api/hops/3"}
    assert "x-trace-id" not in other.headers and other.json()["c"] is None

    everything, _ = _edge_app(**{"tracing.enabled": "true"})
    async with serving(everything) as client:
        other = await client.get("/other")
        health = await client.get("/health")
    assert other.json()["c"] == other.headers["x-trace-id"]
    assert health.status_code == 200 and "x-trace-id" not in health.headers  # actuators are left alone


# -- Event over HTTP between two real processes --------------------------------------------------------------
def _trace_records_in_text_log(text: str) -> list[dict[str, Any]]:
    return [json.loads(line.split(" - ", 1)[1]) for line in text.splitlines() if " meshkit.trace - " in line]


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_trace_crosses_event_over_http_to_another_process_and_back() -> None:
    with UvicornProcess(
        "tests.apps.traced:app", properties={"application.name": "traced-b", "log.format": "json"}
    ) as b:
        props = {"application.name": "traced-a", "peer.url": b.event_url}
        with UvicornProcess("tests.apps.traced:app", properties=props) as a:
            response = httpx.get(
                a.url + "/api/chain/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}, timeout=10
            )
            bad = httpx.get(a.url + "/api/chain/2", headers={"traceparent": "00-nonsense-01"}, timeout=10)
            # Event over HTTP straight to b: the envelope's trace, and an X-Trace-Id for an untraced one
            traced = EventEnvelope("chain.leaf", None, trace_id="abc-1", trace_path="POST /x")
            direct = httpx.post(
                b.event_url, content=encode(traced), headers={"content-type": "application/octet-stream"}
            )
            adopted = httpx.post(
                b.event_url,
                content=encode(EventEnvelope("chain.leaf", None)),
                headers={"content-type": "application/octet-stream", "X-Trace-Id": "abc-2"},
            )
            a_origin, b_origin = (
                httpx.get(a.url + "/info").json()["origin"],
                httpx.get(b.url + "/info").json()["origin"],
            )
            a.wait_for_log('"route":"chain.local"')
            b.wait_for_log('"route": "chain.leaf"')
        a_log = a.log_text()
    b_log = b.log_text()

    path = "GET /api/chain/1"
    assert response.status_code == 200 and response.headers["x-trace-id"] == TRACE
    assert response.json() == {
        "local": {"route": "chain.local", "trace_id": TRACE, "path": path},
        "remote": {
            "remote": {"route": "chain.remote", "trace_id": TRACE, "path": path},
            "leaf": {"route": "chain.leaf", "trace_id": TRACE, "path": path},
        },
        "reply": {"status": 200, "trace_id": TRACE, "trace_path": path},  # the reply envelope's fields
    }
    new = bad.headers["x-trace-id"]
    assert HEX32.fullmatch(new) and bad.json()["remote"]["leaf"]["trace_id"] == new

    reply = decode(direct.content)
    assert direct.headers["x-trace-id"] == "abc-1"
    assert (reply.trace_id, reply.trace_path) == ("abc-1", "POST /x") and reply.body["trace_id"] == "abc-1"
    assert adopted.headers["x-trace-id"] == "abc-2" and decode(adopted.content).body["trace_id"] == "abc-2"

    # a's trace records (text log): chain.local, child of the caller's span
    on_a = [r for r in _trace_records_in_text_log(a_log) if r["trace_id"] == TRACE]
    (local,) = on_a
    assert (local["route"], local["origin"], local["app"]) == ("chain.local", a_origin, "traced-a")
    assert local["parent_span_id"] == PARENT and local["trace_path"] == path and local["status"] == 200

    # b's trace records (JSON log): chain.remote, child of a's chain.local; chain.leaf, child of chain.remote
    lines = _json_lines(b_log)
    assert lines and all({"time", "level", "logger", "message", "origin"} <= set(line) for line in lines)
    assert all(line["origin"] == b_origin for line in lines)
    on_b = {
        line["trace"]["route"]: line["trace"]
        for line in lines
        if line["logger"] == "meshkit.trace" and line["trace_id"] == TRACE
    }
    assert set(on_b) == {"chain.remote", "chain.leaf"}
    remote, leaf = on_b["chain.remote"], on_b["chain.leaf"]
    assert (
        remote["parent_span_id"] == local["span_id"] and remote["from"] == "chain.local"
    )  # the calling function
    assert leaf["parent_span_id"] == remote["span_id"] and leaf["from"] == "chain.remote"
    assert remote["origin"] == leaf["origin"] == b_origin
    # a line logged by a function while it runs carries its route and trace
    (said,) = [
        line
        for line in lines
        if line["message"] == "chain.remote asks chain.leaf" and line["trace_id"] == TRACE
    ]
    assert (
        said["route"] == "chain.remote"
        and said["trace_path"] == path
        and said["logger"] == "meshkit.tests.traced"
    )


# -- OpenTelemetry -------------------------------------------------------------------------------------------
@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from meshkit.observe.otel import use_tracer_provider

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)
        provider.shutdown()


async def test_each_execution_is_an_otel_span_child_of_its_sender(spans: Any) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    registry = FunctionRegistry()
    _hops(registry)
    forwarded = trace_collector(registry)

    @registry.route("hop.crash")
    async def crash(body: Any) -> None:
        raise RuntimeError("otel sees this")

    props = {"tracing.otel": "true", "distributed.trace.forwarder": FORWARDER}
    async with running_platform(registry, properties=props) as platform:
        po = PostOffice(platform, trace_id=TRACE, trace_path="GET /api/otel")
        await po.request("hop.a", None)
        await po.request("hop.crash", None)
        await eventually(lambda: len(forwarded) == 5)
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert set(finished) == {"hop.a", "hop.b", "hop.c", "hop.sink", "hop.crash"}
    a, b, c, sink = (finished[r] for r in ("hop.a", "hop.b", "hop.c", "hop.sink"))
    for span in finished.values():
        assert span.context.trace_id == int(TRACE, 16)
        assert span.attributes["meshkit.trace_id"] == TRACE
        assert span.attributes["meshkit.origin"] == platform.origin
    assert b.parent.span_id == a.context.span_id and c.parent.span_id == b.context.span_id
    assert sink.parent.span_id == a.context.span_id
    assert a.parent.is_remote  # the first execution of a trace with no span: a parent derived from the id
    assert a.kind == SpanKind.SERVER and sink.kind == SpanKind.CONSUMER
    assert finished["hop.crash"].status.status_code == StatusCode.ERROR
    assert finished["hop.crash"].attributes["meshkit.status"] == 500
    # the trace records name the same spans
    records = by_route(forwarded)
    assert records["hop.b"]["span_id"] == f"{b.context.span_id:016x}"
    assert records["hop.b"]["parent_span_id"] == f"{a.context.span_id:016x}"


async def test_the_http_edge_is_the_parent_span_of_the_first_execution(spans: Any) -> None:
    app, _ = _edge_app(**{"tracing.otel": "true"})
    async with serving(app) as client:
        continued = await client.get("/api/hops/5", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        started = await client.get("/api/hops/6", headers={"X-Trace-Id": "order-9"})
    assert continued.headers["x-trace-id"] == TRACE
    finished = spans.get_finished_spans()
    edge = next(s for s in finished if s.name == "GET /api/hops/5")
    hop = next(s for s in finished if s.name == "hop.c" and s.context.trace_id == int(TRACE, 16))
    assert edge.parent.span_id == int(PARENT, 16) and edge.context.trace_id == int(TRACE, 16)
    assert hop.parent.span_id == edge.context.span_id
    assert edge.attributes["http.response.status_code"] == 200
    # an X-Trace-Id of another shape: the same OpenTelemetry trace in every process (hashed)
    from meshkit.observe.otel import otel_trace_id

    assert started.headers["x-trace-id"] == "order-9"
    edge6 = next(s for s in finished if s.name == "GET /api/hops/6")
    assert edge6.context.trace_id == otel_trace_id("order-9")


async def test_a_new_trace_at_the_edge_takes_the_otel_trace_id(spans: Any) -> None:
    app, _ = _edge_app(**{"tracing.otel": "true", "tracing.paths": "/api/"})
    async with serving(app) as client:
        response = await client.get("/api/hops/8")
    (edge,) = [s for s in spans.get_finished_spans() if s.name == "GET /api/hops/8"]
    assert edge.parent is None  # a real root
    assert response.headers["x-trace-id"] == f"{edge.context.trace_id:032x}"


async def test_a_stream_is_one_span_with_its_segment_and_byte_counts() -> None:
    registry = FunctionRegistry()
    forwarded = trace_collector(registry)

    @registry.route("traced.words")
    async def words(body: Any) -> AsyncIterator[str]:
        for word in ("alpha", "beta", "gamma"):
            await asyncio.sleep(0)
            yield word

    async with running_platform(registry, properties={"distributed.trace.forwarder": FORWARDER}) as platform:
        po = PostOffice(platform, trace_id=TRACE, trace_path="GET /api/words")
        segments = [segment async for segment in po.stream("traced.words")]
        await eventually(lambda: len(forwarded) == 1)
    assert all((s.trace_id, s.trace_path) == (TRACE, "GET /api/words") for s in segments)
    [record] = forwarded
    assert record["route"] == "traced.words" and record["status"] == 200
    assert (record["segments"], record["bytes"]) == (3, len("alphabetagamma"))
