"""Event streams on the in-process bus: a function that yields, or writes, segments to its caller.

The contract: docs/protocol/streams.md.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from meshkit import AppError, EventEnvelope, EventStreamWriter, FunctionRegistry, PostOffice
from meshkit.core import DATA, EOF, EXCEPTION, X_EVENT_STREAM, make_spec, stream_signal
from meshkit.testing import running_platform
from tests.apps import streaming
from tests.support.eventually import eventually


def markers(segments: list[EventEnvelope]) -> list[str | None]:
    return [stream_signal(s) for s in segments]


async def collect(stream: Any) -> list[EventEnvelope]:
    return [segment async for segment in stream]


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    streaming.STATE.update(started=0, stopped=0, produced=0, peak_outstanding=0)


async def test_segments_arrive_in_order_then_the_end() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        segments = await collect(PostOffice(platform).stream("stream.count", {"count": 50}))
    assert markers(segments) == [DATA] * 50 + [EOF]
    assert [int(s.body) for s in segments[:-1]] == list(range(50))
    assert all(s.sender == "stream.count" and s.status == 200 for s in segments)


async def test_ten_thousand_segments_in_order_and_the_caller_cid_on_each() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        stream = PostOffice(platform).stream(EventEnvelope("stream.count", {"count": 10_000}, cid="mine"))
        bodies, cids = [], set()
        async for segment in stream:
            bodies.append(segment.body)
            cids.add(segment.cid)
    assert [int(b) for b in bodies[:-1]] == list(range(10_000))
    assert bodies[-1] is None and cids == {"mine"}


async def test_segments_over_64_kb_arrive_whole() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        size = 200_000
        data = [
            b async for b in PostOffice(platform).stream("stream.count", {"count": 5, "size": size}).data()
        ]
    assert [len(d) for d in data] == [size] * 5
    assert [int(d[:8]) for d in data] == list(range(5))


async def test_the_writer_sends_head_named_segments_and_trailing_metadata() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        segments = await collect(PostOffice(platform).stream("stream.written"))
    assert markers(segments) == [DATA, DATA, DATA, EOF]
    head = segments[0]
    assert head.body == "one" and head.headers["content-type"] == "text/plain"
    assert segments[1].headers["x-event-name"] == "progress" and segments[1].body == {"done": 1}
    assert segments[2].body == b"\x00\x01"
    assert segments[3].body == {"segments": 3}


async def test_break_stops_the_producer() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        seen = 0
        async for _ in PostOffice(platform).stream("stream.endless"):
            seen += 1
            if seen == 1000:
                break
        await eventually(lambda: streaming.STATE["stopped"] == 1)
        assert not platform.streams.outlets and not platform.streams.readers
        # the producer ran ahead at most one window of the reader
        assert streaming.STATE["produced"] <= seen + platform.streams.window + 1


@pytest.mark.parametrize("how", ["aclose", "async with", "data() and break", "dropped"])
async def test_every_way_of_stopping_early_stops_the_producer(how: str) -> None:
    async with running_platform(functions=streaming.functions) as platform:
        po = PostOffice(platform)
        if how == "aclose":
            stream = po.stream("stream.endless")
            await anext(stream)
            await stream.aclose()
            with pytest.raises(StopAsyncIteration):
                await anext(stream)
        elif how == "async with":
            async with po.stream("stream.endless") as stream:
                await anext(stream)
        elif how == "data() and break":
            async for value in po.stream("stream.endless").data():
                if value == 10:
                    break
        else:
            stream = po.stream("stream.endless")
            await anext(stream)
            del stream
            gc.collect()
        await eventually(lambda: streaming.STATE["stopped"] == 1)
        assert not platform.streams.outlets


async def test_cancelling_the_reader_stops_the_producer() -> None:
    async with running_platform(functions=streaming.functions) as platform:

        async def read() -> None:
            async for _ in PostOffice(platform).stream("stream.endless", {"delay": 0.05}):
                pass

        task = asyncio.create_task(read())
        await eventually(lambda: streaming.STATE["produced"] >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: streaming.STATE["stopped"] == 1)


async def test_no_segment_within_the_idle_allowance_ends_it_in_band_with_408() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        started = asyncio.get_running_loop().time()
        segments = await collect(PostOffice(platform).stream("stream.quiet", {"seconds": 30}, timeout=0.3))
        elapsed = asyncio.get_running_loop().time() - started
        assert markers(segments) == [DATA, EXCEPTION]
        assert segments[1].status == 408 and "no segment within 0.3 s" in segments[1].body["message"]
        assert elapsed < 5
        await eventually(lambda: not platform.streams.outlets)  # and the quiet producer was stopped


async def test_a_producer_error_ends_the_stream_in_band_with_its_status() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        po = PostOffice(platform)
        segments = await collect(po.stream("stream.fail", {"before": 3, "status": 418, "message": "teapot"}))
        assert markers(segments) == [DATA] * 3 + [EXCEPTION]
        assert segments[-1].status == 418
        assert segments[-1].body == {"type": "error", "status": 418, "message": "teapot"}
        with pytest.raises(AppError) as raised:
            [value async for value in po.stream("stream.fail", {"before": 1, "status": 503}).data()]
        assert raised.value.status == 503


async def test_an_unexpected_exception_is_a_500_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = FunctionRegistry()

    @registry.route("broken.stream")
    async def broken(body: Any) -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("the model went away")

    async with running_platform(functions=registry) as platform:
        segments = await collect(PostOffice(platform).stream("broken.stream"))
    assert segments[-1].status == 500 and segments[-1].body["message"] == "the model went away"
    assert segments[-1].exception == "RuntimeError"
    assert "broken.stream failed" in caplog.text


async def test_a_plain_function_streamed_yields_its_one_reply_and_sees_no_stream_headers() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        registry_echo = make_spec("echo.headers", lambda headers, body: headers)
        platform.register(registry_echo)
        [reply] = await collect(PostOffice(platform).stream("echo.headers", None, {"a": "b"}))
        assert stream_signal(reply) is None and reply.status == 200
        assert reply.body == {"a": "b", "my_route": "echo.headers"}


async def test_request_to_a_streaming_function_gets_406_and_it_never_runs() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        reply = await PostOffice(platform).request("stream.endless", timeout=2)
        assert reply.status == 406
        assert reply.body.startswith("Streaming function requires a caller that accepts text/event-stream")
        await PostOffice(platform).send("stream.endless")  # drop-and-forget: refused too, and logged
        await asyncio.sleep(0.05)
        assert streaming.STATE["started"] == 0


async def test_an_unknown_route_arrives_in_band_as_the_one_reply() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        [reply] = await collect(PostOffice(platform).stream("no.such.route"))
    assert reply.status == 404 and stream_signal(reply) is None


class Question(BaseModel):
    text: str


async def test_a_body_its_model_refuses_is_one_400_reply_before_any_segment() -> None:
    registry = FunctionRegistry()

    @registry.route("words.stream")
    async def words(body: Question) -> AsyncIterator[str]:
        for word in body.text.split():
            yield word

    async with running_platform(functions=registry) as platform:
        po = PostOffice(platform)
        [reply] = await collect(po.stream("words.stream", {"txt": 1}))
        assert reply.status == 400 and "text" in reply.body
        assert [w async for w in po.stream("words.stream", {"text": "a b"}).data()] == ["a", "b"]


async def test_a_slow_reader_holds_the_producer_to_its_window_and_memory_stays_flat() -> None:
    window = 16
    async with running_platform(
        functions=streaming.functions, properties={"stream.window": str(window)}
    ) as platform:
        tracemalloc.start()
        try:
            stream = PostOffice(platform).stream("stream.endless", {"size": 65_536})
            await anext(stream)
            await asyncio.sleep(0.2)  # the producer fills the window, then waits
            baseline, _ = tracemalloc.get_traced_memory()
            for _ in range(200):  # 200 more segments of 64 KB, read slowly: 12.8 MB went through
                await anext(stream)
                await asyncio.sleep(0.001)
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert streaming.STATE["peak_outstanding"] <= window
        assert streaming.STATE["produced"] <= 201 + window
        assert current - baseline < 4 * window * 65_536  # what a window holds, not what went through
        await stream.aclose()


async def test_the_byte_bound_holds_a_producer_of_big_segments_below_its_window() -> None:
    async with running_platform(
        functions=streaming.functions, properties={"stream.window.bytes": str(4 * 65_536)}
    ) as platform:
        stream = PostOffice(platform).stream("stream.endless", {"size": 65_536})
        await anext(stream)
        await asyncio.sleep(0.1)
        assert streaming.STATE["peak_outstanding"] <= 5
        await stream.aclose()


async def test_a_producer_stops_when_its_reader_takes_nothing_for_its_idle_allowance() -> None:
    async with running_platform(functions=streaming.functions, properties={"stream.window": "4"}) as platform:
        stream = PostOffice(platform).stream("stream.endless", timeout=0.3)
        await anext(stream)
        await eventually(lambda: streaming.STATE["stopped"] == 1, timeout=5)  # no credit for 0.3 s
        rest = await collect(stream)
        assert markers(rest) == [DATA] * 4 + [EXCEPTION] and rest[-1].status == 408


async def test_a_queued_stream_request_whose_first_segment_is_overdue_never_runs() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        po = PostOffice(platform)
        # four instances: four quiet streams hold them, the fifth waits past its allowance
        held = [po.stream("stream.quiet", {"seconds": 1}, timeout=5) for _ in range(4)]
        for stream in held:
            await anext(stream)
        [late] = await collect(po.stream("stream.quiet", {"seconds": 1}, timeout=0.2))
        assert late.status == 408
        for stream in held:
            await stream.aclose()
        assert platform.pool("stream.quiet").expired == 0 or platform.pool("stream.quiet").expired == 1


async def test_streams_are_counted_per_route() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        await collect(PostOffice(platform).stream("stream.count", {"count": 10, "size": 100}))
        stats = platform.pool("stream.count").stats
        assert (stats.streams, stats.segments, stats.segment_bytes) == (1, 10, 1000)


def test_a_streaming_function_must_be_async() -> None:
    def lines(body: Any) -> Any:
        yield body

    with pytest.raises(TypeError, match="plain generator"):
        make_spec("a.b", lines)

    def written(body: Any, out: EventStreamWriter) -> None: ...

    with pytest.raises(TypeError, match="must be 'async def'"):
        make_spec("a.b", written)

    async def both(body: Any, out: EventStreamWriter) -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="takes no EventStreamWriter"):
        make_spec("a.b", both)

    async def good(headers: dict[str, str], body: Any, out: EventStreamWriter) -> None: ...

    spec = make_spec("a.b", good)
    assert spec.streaming and spec.writer == "out" and spec.arity == 2


async def test_writes_after_the_end_are_dropped_and_a_cancelled_write_raises() -> None:
    registry = FunctionRegistry()
    outcome: dict[str, Any] = {}

    @registry.route("late.writes")
    async def late(body: Any, out: EventStreamWriter) -> None:
        await out.write(1)
        await out.close()
        await out.write(2)  # dropped

    @registry.route("ignores.cancel")
    async def stubborn(body: Any, out: EventStreamWriter) -> None:
        try:
            while True:
                await out.write(0)
        except BaseException as exc:
            outcome["raised"] = type(exc).__name__
            raise

    async with running_platform(functions=registry) as platform:
        po = PostOffice(platform)
        assert markers(await collect(po.stream("late.writes"))) == [DATA, EOF]
        stream = po.stream("ignores.cancel")
        await anext(stream)
        await stream.aclose()
        await eventually(lambda: "raised" in outcome)
        assert outcome["raised"] in {"CancelledError", "StreamCancelled"}


async def test_a_stream_ends_in_band_when_the_platform_stops() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        stream = PostOffice(platform).stream("stream.endless", {"delay": 0.01})
        await anext(stream)
    rest = await collect(stream)
    assert rest[-1].status == 503 and stream_signal(rest[-1]) == EXCEPTION
    assert X_EVENT_STREAM in rest[-1].headers


@pytest.mark.parametrize(
    ("window", "idle"), [("many", "1000"), ("", "1000"), ("0x10", "1000"), ("-5", None), ("8", "soon")]
)
async def test_bad_stream_request_headers_are_refused_or_bounded(window: str, idle: str | None) -> None:
    async with running_platform(functions=streaming.functions) as platform:
        headers = {"x-stream-window": window, **({"x-stream-idle": idle} if idle is not None else {})}
        reply = await PostOffice(platform).request("stream.count", {"count": 3}, headers, timeout=2)
        if window.lstrip("-").isdigit():  # a number out of range is bounded: the request is a stream one
            assert reply.status == 200 and stream_signal(reply) == DATA
        else:  # not a number: not a stream request, the engines' 406
            assert reply.status == 406


async def test_controls_from_anyone_but_the_reader_and_bad_credit_are_dropped() -> None:
    async with running_platform(functions=streaming.functions, properties={"stream.window": "4"}) as platform:
        stream = PostOffice(platform).stream("stream.endless")
        await anext(stream)
        [outlet] = platform.streams.outlets.values()
        forged = {"x-stream-control": "cancel"}
        platform.dispatch(EventEnvelope(platform.inbox, 0, forged, cid=outlet.cid, sender="@someone-else"))
        for body in ("many", -3, True, None, 2.5):  # credit that is not a positive integer
            credit = {"x-stream-control": "credit"}
            platform.dispatch(
                EventEnvelope(platform.inbox, body, credit, cid=outlet.cid, sender=outlet.consumer)
            )
        unknown = {"x-stream-control": "pause"}
        platform.dispatch(EventEnvelope(platform.inbox, 0, unknown, cid=outlet.cid, sender=outlet.consumer))
        await asyncio.sleep(0.05)
        assert outlet.cancelled is None and streaming.STATE["produced"] <= 5  # still waiting for real credit
        assert [await anext(stream) for _ in range(20)][-1].body == 20  # and reading still works
        await stream.aclose()


async def test_a_segment_with_an_unknown_marker_is_skipped_and_a_flood_is_stopped() -> None:
    async with running_platform(functions=[], properties={"stream.window": "4"}) as platform:
        hub = platform.streams
        stream = platform.stream(EventEnvelope("nobody.home"), 2.0)  # in-band 404, then we feed it by hand
        reader = hub.reader("fake-cid", "fake.route", 2.0, None)
        hub.arrive(EventEnvelope(platform.inbox, 1, {"x-event-stream": "DATA"}, cid="fake-cid"))
        hub.arrive(EventEnvelope(platform.inbox, 2, {"x-event-stream": "sideways"}, cid="fake-cid"))
        hub.arrive(EventEnvelope(platform.inbox, 3, {"X-Event-Stream": "eof"}, cid="fake-cid"))
        assert [(stream_signal(s), s.body) for s in await collect(reader)] == [(DATA, 1), (EOF, 3)]
        flooded = hub.reader("flood-cid", "fake.route", 2.0, None)
        for index in range(100):  # a producer that ignores the window of 4
            hub.arrive(EventEnvelope(platform.inbox, index, {"x-event-stream": "data"}, cid="flood-cid"))
        segments = await collect(flooded)
        assert segments[-1].status == 502 and stream_signal(segments[-1]) == EXCEPTION
        assert len(segments) < 40
        assert (await collect(stream))[0].status == 404


async def test_a_numbered_segment_lost_or_out_of_order_ends_the_stream_with_502() -> None:
    async with running_platform(functions=[]) as platform:
        hub = platform.streams
        for numbers, expected in (([0, 1, 2], [DATA, DATA, EOF]), ([0, 2, 3], [DATA, EXCEPTION])):
            cid = f"numbered-{numbers}"
            reader = hub.reader(cid, "far.away", 2.0, None)
            for position, number in enumerate(numbers):
                marker = "eof" if position == len(numbers) - 1 else "data"
                headers = {"x-event-stream": marker, "x-stream-seq": str(number)}
                hub.arrive(EventEnvelope(platform.inbox, position, headers, cid=cid))
            segments = await collect(reader)
            assert markers(segments) == expected
            assert all("x-stream-seq" not in s.headers for s in segments)  # the reader's business only
        assert segments[-1].status == 502 and "segment 1 lost" in segments[-1].body["message"]


async def test_a_run_of_segments_unpacks_in_order_and_a_bad_run_ends_the_stream_with_502() -> None:
    async with running_platform(functions=[]) as platform:
        hub = platform.streams
        reader = hub.reader("run-cid", "far.away", 2.0, None)
        run = {"x-event-stream": "data", "x-stream-run": "3", "x-stream-seq": "0"}
        traced = EventEnvelope(platform.inbox, ["a", "b", "c"], run, cid="run-cid", trace_id="t-1")
        hub.arrive(traced)
        end = {"x-event-stream": "eof", "x-stream-seq": "1"}
        hub.arrive(EventEnvelope(platform.inbox, None, end, cid="run-cid"))
        segments = await collect(reader)
        assert [(stream_signal(s), s.body) for s in segments] == [
            (DATA, "a"),
            (DATA, "b"),
            (DATA, "c"),
            (EOF, None),
        ]
        assert {s.trace_id for s in segments[:3]} == {"t-1"}
        assert all("x-stream-run" not in s.headers for s in segments)
        for cid, body, count in (("short", ["a"], "2"), ("not-a-list", "abc", "3"), ("empty", [], "0")):
            bad = hub.reader(cid, "far.away", 2.0, None)
            headers = {"x-event-stream": "data", "x-stream-run": count, "x-stream-seq": "0"}
            hub.arrive(EventEnvelope(platform.inbox, body, headers, cid=cid))
            [failed] = await collect(bad)
            assert failed.status == 502 and "run of segments" in failed.body["message"]


async def test_big_segments_under_the_default_window_flow_without_waiting_out_the_idle_allowance() -> None:
    # 64 KB segments fill the 4 MiB byte window at 64 segments, long before a quarter of 4096 segments:
    # the reader grants credit by bytes too, or the producer would wait for its idle allowance
    async with running_platform(functions=streaming.functions) as platform:
        stream = PostOffice(platform).stream("stream.endless", {"size": 65_536}, timeout=2)
        segments = [await anext(stream) for _ in range(500)]
        await stream.aclose()
    assert [stream_signal(s) for s in segments] == [DATA] * 500
    assert streaming.STATE["peak_outstanding"] <= 64


# -- from a plain `def` handler: the blocking bridge ---------------------------------------------------------
readers = FunctionRegistry()


@readers.route("sync.reads")
def sync_reads(body: dict[str, Any]) -> list[Any]:
    """Reads the stream `body` names from its worker thread: each segment's marker and body."""
    with PostOffice().sync.stream(body["route"], body.get("body"), timeout=5) as segments:
        return [[stream_signal(s), s.body] for s in segments]


@readers.route("sync.data")
def sync_data(body: dict[str, Any]) -> list[Any]:
    return list(PostOffice().sync.stream(body["route"], body.get("body"), timeout=5).data())


@readers.route("sync.breaks")
def sync_breaks(body: dict[str, Any]) -> list[Any]:
    taken = []
    with PostOffice().sync.stream("stream.endless", timeout=5) as segments:
        for segment in segments:
            taken.append(segment.body)
            if len(taken) == body["after"]:
                break  # leaving the `with` stops the producer
    return taken


async def test_a_plain_def_handler_reads_a_stream_through_the_sync_bridge() -> None:
    async with running_platform(functions=[*streaming.functions, *readers]) as platform:
        po = PostOffice(platform)
        reply = await po.request("sync.reads", {"route": "stream.count", "body": {"count": 5}}, timeout=10)
        assert reply.status == 200, reply.body
        assert reply.body == [[DATA, f"{n:08d}"] for n in range(5)] + [[EOF, None]]
        data = await po.request("sync.data", {"route": "stream.count", "body": {"count": 3}}, timeout=10)
        assert data.body == ["00000000", "00000001", "00000002"]


async def test_a_failing_stream_raises_its_error_in_the_thread_and_a_break_stops_the_producer() -> None:
    async with running_platform(functions=[*streaming.functions, *readers]) as platform:
        po = PostOffice(platform)
        failed = await po.request(
            "sync.data", {"route": "stream.fail", "body": {"before": 2, "status": 409}}, timeout=10
        )
        assert failed.status == 409 and "the producer failed" in failed.body
        taken = await po.request("sync.breaks", {"after": 10}, timeout=10)
        assert taken.status == 200 and taken.body == list(range(10))
        await eventually(lambda: streaming.STATE["stopped"] == 1)
        assert not platform.streams.outlets and not platform.streams.readers


async def test_a_sync_stream_of_an_unknown_route_is_its_one_404_and_data_raises_it() -> None:
    async with running_platform(functions=[*streaming.functions, *readers]) as platform:
        po = PostOffice(platform)
        reply = await po.request("sync.reads", {"route": "no.such.route"}, timeout=10)
        assert reply.status == 200 and len(reply.body) == 1, reply.body
        [[marker, body]] = reply.body
        assert marker is None and "no.such.route" in str(body)
        failed = await po.request("sync.data", {"route": "no.such.route"}, timeout=10)
        assert failed.status == 404 and "no.such.route" in failed.body


async def test_the_sync_stream_refuses_to_block_the_event_loop() -> None:
    async with running_platform(functions=streaming.functions) as platform:
        with pytest.raises(RuntimeError, match=r"use 'await po\.request"):
            PostOffice(platform).sync.stream("stream.count", {"count": 1})
