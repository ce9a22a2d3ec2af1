"""Event streams over Event over HTTP against real servers: a streaming function read as Server-Sent Events.

The contract: docs/protocol/streams.md (its last sections are the SSE dialect). The producer is
``tests/apps/streaming.py`` under ``meshkit run`` in a process of its own, with a credit window of
``WINDOW`` segments; the reader is an app of the test's own that reaches it only over HTTP
(``PostOffice.stream(..., endpoint=url)``), or raw aiohttp where the wire itself is under test. What the
producer did (started, stopped, produced, how far ahead of its reader it got, its resident memory) is read
from the server's ``stream.state``.

``sse_response`` (the plain SSE relay for browsers) is not here: it needs an app of its own around it, and
``meshkit.testing`` has no HTTP server to put one in. The REST example is where it is served.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshkit import AppError, EventEnvelope, Platform, PostOffice, decode, encode
from meshkit.core import (
    DATA,
    EOF,
    EXCEPTION,
    STREAM_CALLER_REQUIRED,
    TEXT_EVENT_STREAM,
    stream_signal,
)
from meshkit.testing import running_platform
from tests.apps import streaming
from tests.apps.streaming import segment
from tests.support.eventually import eventually
from tests.support.servers import UvicornProcess

WINDOW = 32  # the server's stream.window: the data segments its producer may have sent and not had credited
KEEP_ALIVE = 0.3  # the server's stream.keep.alive: seconds of a quiet stream between two `: ping` comments
PROPERTIES = {"stream.window": str(WINDOW), "stream.keep.alive": str(KEEP_ALIVE)}
OCTET_STREAM = "application/octet-stream"
SSE_ACCEPT = {"accept": TEXT_EVENT_STREAM, "content-type": OCTET_STREAM}
KB = 1024
BIG = 64 * KB  # the segment size of the memory tests


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornProcess]:
    with UvicornProcess("tests.apps.streaming:app", properties=PROPERTIES) as process:
        yield process


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    """The reader: an app with no functions that reaches the server only over HTTP."""
    async with running_platform(functions=[], name="stream-reader") as reader:
        yield reader


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def markers(segments: list[EventEnvelope]) -> list[str | None]:
    return [stream_signal(s) for s in segments]


async def collect(stream: Any) -> list[EventEnvelope]:
    return [s async for s in stream]


async def server_state(po: PostOffice, server: UvicornProcess) -> dict[str, int]:
    reply = await po.request("stream.state", endpoint=server.event_url, timeout=5)
    state: dict[str, int] = reply.body
    return state


async def idle_state(po: PostOffice, server: UvicornProcess) -> dict[str, int]:
    """The server's counters once nothing is being produced (an earlier test's producer has stopped)."""
    return await eventually(
        lambda: _when(server_state(po, server), lambda s: s["producing"] == 0),
        what="no stream being produced on the server",
    )


async def stopped_since(
    po: PostOffice, server: UvicornProcess, before: dict[str, int], timeout: float
) -> None:
    """Wait until one more stream.endless has stopped than in `before`, and nothing is produced."""
    last: dict[str, Any] = {}

    async def stopped() -> bool:
        last.update(await server_state(po, server))
        return bool(last["stopped"] == before["stopped"] + 1 and last["producing"] == 0)

    await eventually(
        stopped,
        timeout=timeout,
        what="the server's producer stopped",
        describe=lambda: f"before: {before}\nnow: {last}\nserver log:\n{server.log_tail()}",
    )


async def _when(state: Any, test: Any) -> dict[str, int] | None:
    value = await state
    return value if test(value) else None


# --- 1. order -----------------------------------------------------------------------------------------------


async def test_a_hundred_segments_arrive_in_order_then_the_end(
    platform: Platform, server: UvicornProcess
) -> None:
    stream = PostOffice(platform).stream(
        EventEnvelope("stream.count", {"count": 100}, cid="mine"), endpoint=server.event_url
    )
    segments = await collect(stream)

    assert markers(segments) == [DATA] * 100 + [EOF]
    assert [s.body for s in segments[:-1]] == [segment(i, 8) for i in range(100)]
    assert {s.cid for s in segments} == {"mine"}, "every segment carries the caller's cid"
    assert all(s.status == 200 for s in segments)
    assert segments[0].sender == "stream.count", "the head (an envelope frame) names its producer"


async def test_ten_thousand_segments_of_200_bytes_in_order(
    platform: Platform, server: UvicornProcess
) -> None:
    bodies = [
        b
        async for b in PostOffice(platform)
        .stream("stream.count", {"count": 10_000, "size": 200}, endpoint=server.event_url)
        .data()
    ]
    assert len(bodies) == 10_000
    assert bodies == [segment(i, 200) for i in range(10_000)]


async def test_segments_over_64_kb_arrive_whole_and_in_order(
    platform: Platform, server: UvicornProcess
) -> None:
    size = 200_000
    stream = PostOffice(platform).stream(
        "stream.count", {"count": 5, "size": size}, endpoint=server.event_url
    )
    segments = await collect(stream)

    assert markers(segments) == [DATA] * 5 + [EOF]
    assert [len(s.body) for s in segments[:-1]] == [size] * 5
    assert [s.body for s in segments[:-1]] == [segment(i, size) for i in range(5)]


async def test_a_written_stream_arrives_as_it_does_on_the_bus(
    platform: Platform, server: UvicornProcess
) -> None:
    """Head content type, a named segment, a bytes segment and the EOF's metadata, segment for segment."""
    over_http = await collect(PostOffice(platform).stream("stream.written", endpoint=server.event_url))
    async with running_platform(functions=streaming.functions, name="on-the-bus") as local:
        on_the_bus = await collect(PostOffice(local).stream("stream.written"))

    def seen(segments: list[EventEnvelope]) -> list[tuple[Any, ...]]:
        return [(stream_signal(s), s.status, s.body, s.headers, s.sender) for s in segments]

    assert markers(over_http) == [DATA, DATA, DATA, EOF]
    assert over_http[0].headers["content-type"] == "text/plain" and over_http[0].body == "one"
    assert over_http[1].headers["x-event-name"] == "progress" and over_http[1].body == {"done": 1}
    assert over_http[2].body == b"\x00\x01"
    assert over_http[3].body == {"segments": 3}
    assert seen(over_http) == seen(on_the_bus)


# --- 2. an early stop stops the producer --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["break", "aclose", "task cancelled"])
async def test_stopping_early_stops_the_producer(
    platform: Platform, server: UvicornProcess, how: str
) -> None:
    po = PostOffice(platform)
    before = await idle_state(po, server)
    read = 0
    if how == "break":
        async for _ in po.stream("stream.endless", endpoint=server.event_url):
            read += 1
            if read == 500:
                break
    elif how == "aclose":
        stream = po.stream("stream.endless", endpoint=server.event_url)
        for _ in range(500):
            assert stream_signal(await anext(stream)) == DATA
            read += 1
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    else:

        async def read_on() -> None:
            nonlocal read
            async for _ in po.stream("stream.endless", endpoint=server.event_url):
                read += 1

        task = asyncio.create_task(read_on())
        await eventually(lambda: read >= 500, what="500 segments read")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await stopped_since(po, server, before, timeout=3)
    after = await server_state(po, server)
    assert after["started"] == before["started"] + 1


# --- 3. the idle allowance ----------------------------------------------------------------------------------


async def test_a_quiet_producer_ends_the_stream_in_band_with_408_and_is_stopped(
    platform: Platform, server: UvicornProcess
) -> None:
    po = PostOffice(platform)
    await idle_state(po, server)
    started = time.monotonic()

    segments = await collect(po.stream("stream.quiet", {"seconds": 30}, timeout=1, endpoint=server.event_url))
    elapsed = time.monotonic() - started

    assert markers(segments) == [DATA, EXCEPTION]
    assert segments[0].body == "first"
    assert segments[1].status == 408
    assert segments[1].body["status"] == 408 and segments[1].body["type"] == "error"
    assert elapsed < 2.5, f"the 408 came after {elapsed:.2f} s, for an idle allowance of 1 s"
    # its 30 s sleep is cancelled: the server produces nothing any more
    await eventually(
        lambda: _when(server_state(po, server), lambda s: s["producing"] == 0),
        timeout=2,
        what="the quiet producer stopped",
    )


# --- 4. the producer's error --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "message"), [(409, "Already exists"), (500, "the producer failed")])
async def test_a_producer_error_ends_the_stream_after_its_segments(
    platform: Platform, server: UvicornProcess, status: int, message: str
) -> None:
    po = PostOffice(platform)
    body = {"before": 3, "status": status, "message": message}

    segments = await collect(po.stream("stream.fail", body, endpoint=server.event_url))

    assert markers(segments) == [DATA, DATA, DATA, EXCEPTION]
    assert [s.body for s in segments[:3]] == [0, 1, 2]
    end = segments[-1]
    assert end.status == status
    assert end.body == {"type": "error", "status": status, "message": message}

    data: list[Any] = []
    with pytest.raises(AppError) as raised:
        async for datum in po.stream("stream.fail", body, endpoint=server.event_url).data():
            data.append(datum)
    assert data == [0, 1, 2]
    assert raised.value.status == status and raised.value.message == message


# --- 5. the other side leaving ------------------------------------------------------------------------------


async def test_the_server_killed_mid_stream_ends_the_reader_in_band(platform: Platform) -> None:
    with UvicornProcess("tests.apps.streaming:app", properties=PROPERTIES) as doomed:
        stream = PostOffice(platform).stream(
            "stream.endless", {"delay": 0.01}, timeout=10, endpoint=doomed.event_url
        )
        for _ in range(20):
            assert stream_signal(await anext(stream)) == DATA
        doomed.stop(signal.SIGKILL)
        killed = time.monotonic()
        rest = await collect(stream)  # no exception: the end arrives in-band
        elapsed = time.monotonic() - killed

    assert markers(rest) == [DATA] * (len(rest) - 1) + [EXCEPTION]
    end = rest[-1]
    assert end.status in (502, 503), end.body
    assert elapsed < 2, f"the reader noticed after {elapsed:.2f} s (its idle allowance: 10 s)"


@pytest.mark.parametrize("how", ["platform closed", "waiting read cancelled"])
async def test_the_reader_going_away_stops_the_producer(
    platform: Platform, server: UvicornProcess, how: str
) -> None:
    po = PostOffice(platform)
    before = await idle_state(po, server)
    if how == "platform closed":
        async with running_platform(functions=[], name="leaving-reader") as leaving:
            stream = PostOffice(leaving).stream("stream.endless", {"delay": 0.01}, endpoint=server.event_url)
            for _ in range(20):
                assert stream_signal(await anext(stream)) == DATA
        # the platform has stopped, its HTTP session with it, while the stream was open
        await stopped_since(po, server, before, timeout=3)
        await stream.aclose()
    else:
        read = 0

        async def read_on() -> None:
            nonlocal read
            async for _ in po.stream("stream.endless", {"delay": 0.5}, endpoint=server.event_url):
                read += 1

        task = asyncio.create_task(read_on())
        await eventually(lambda: read >= 1, what="the first segment read")
        task.cancel()  # while it waits for the next, half a second away
        with pytest.raises(asyncio.CancelledError):
            await task
        await stopped_since(po, server, before, timeout=3)


# --- 6. the protocol at the edge, on the wire ---------------------------------------------------------------


def frames(raw: bytes) -> list[list[str]]:
    """An SSE body as its frames, each the list of its lines (the server writes LF line ends only)."""
    assert raw.endswith(b"\n\n"), raw[-50:]
    return [frame.split("\n") for frame in raw.decode().split("\n\n")[:-1]]


def envelope_of(frame: list[str]) -> EventEnvelope:
    assert frame[0] == "event: envelope" and len(frame) == 2 and frame[1].startswith("data: "), frame
    return decode(base64.b64decode(frame[1].removeprefix("data: "), validate=True))


async def test_a_streaming_function_without_an_sse_caller_is_refused_with_406_and_never_runs(
    http: aiohttp.ClientSession, platform: Platform, server: UvicornProcess
) -> None:
    po = PostOffice(platform)
    before = await idle_state(po, server)

    async with http.post(server.event_url, data=encode(EventEnvelope("stream.endless"))) as response:
        assert (response.status, response.content_type) == (406, OCTET_STREAM)
        reply = decode(await response.read())
    assert reply.status == 406
    assert reply.body == STREAM_CALLER_REQUIRED

    with pytest.raises(AppError) as raised:  # a plain request through the PostOffice: the same refusal
        await po.request("stream.endless", endpoint=server.event_url, timeout=5)
    assert raised.value.status == 406 and STREAM_CALLER_REQUIRED in raised.value.message

    assert (await server_state(po, server))["started"] == before["started"], "the function never ran"


async def test_an_sse_caller_gets_the_envelope_dialect(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    request = EventEnvelope("stream.count", {"count": 4}, cid="wire-1")
    async with http.post(server.event_url, data=encode(request), headers=SSE_ACCEPT) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith(TEXT_EVENT_STREAM)
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        body = await response.read()

    got = frames(body)
    assert len(got) == 5, got
    head = envelope_of(got[0])  # the first frame is always an envelope frame
    assert (stream_signal(head), head.body, head.status, head.cid) == (DATA, "00000000", 200, "wire-1")
    assert head.to is None and head.reply_to is None, "the server's addressing does not leave it"
    assert got[1:4] == [["data: 00000001"], ["data: 00000002"], ["data: 00000003"]], "later text: raw frames"
    end = envelope_of(got[4])
    assert (stream_signal(end), end.status, end.to, end.reply_to) == (EOF, 200, None, None)


async def test_a_quiet_stream_is_kept_alive_with_ping_comments(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    request = EventEnvelope("stream.quiet", {"seconds": 4 * KEEP_ALIVE})
    async with http.post(
        server.event_url, data=encode(request), headers={**SSE_ACCEPT, "x-ttl": "5000"}
    ) as response:
        assert response.status == 200
        got = frames(await response.read())

    assert envelope_of(got[0]).body == "first"
    pings = got[1:-2]
    assert pings and all(frame == [": ping"] for frame in pings), got
    assert len(pings) >= 2, f"{len(pings)} pings in {4 * KEEP_ALIVE:g} s, one due every {KEEP_ALIVE:g} s"
    assert got[-2] == ["data: late"]
    assert stream_signal(envelope_of(got[-1])) == EOF


@pytest.mark.parametrize("ttl", ["soon", "1.5s", ""])
async def test_a_bad_x_ttl_is_refused_with_400(
    http: aiohttp.ClientSession, server: UvicornProcess, ttl: str
) -> None:
    data = encode(EventEnvelope("stream.count", {"count": 1}))
    async with http.post(server.event_url, data=data, headers={**SSE_ACCEPT, "x-ttl": ttl}) as response:
        assert (response.status, response.content_type) == (400, OCTET_STREAM)
        reply = decode(await response.read())
    assert reply.status == 400 and "x-ttl" in reply.body


async def test_an_unknown_route_with_an_sse_accept_is_a_single_shot_404(
    http: aiohttp.ClientSession, platform: Platform, server: UvicornProcess
) -> None:
    data = encode(EventEnvelope("no.such.stream", {"count": 1}))
    async with http.post(server.event_url, data=data, headers=SSE_ACCEPT) as response:
        assert (response.status, response.content_type) == (404, OCTET_STREAM)
        reply = decode(await response.read())
    assert reply.status == 404 and stream_signal(reply) is None

    # through the PostOffice: the refusal is the stream's one envelope
    segments = await collect(PostOffice(platform).stream("no.such.stream", endpoint=server.event_url))
    assert [s.status for s in segments] == [404]


# --- 7. a slow reader keeps the server's memory flat --------------------------------------------------------


# What the server itself holds of one stream at most: WINDOW segments sent and not credited (each a 64 KB str
# in its own reader's queue, and, while it is written, its SSE frame too: twice), and the one frame uvicorn's
# write buffer takes past its 64 KB high-water mark before it pauses the app. Another window's worth (2 MB)
# is the slack for the allocator and the interpreter: 6 MB, under a third of the 19 MB the slow reader reads.
HELD_KB = (2 * WINDOW * BIG + BIG + WINDOW * BIG) // KB


@pytest.fixture(scope="module")
def lean_server() -> Iterator[UvicornProcess]:
    """A server of the memory tests' own: no earlier test has grown (and freed) its heap."""
    with UvicornProcess("tests.apps.streaming:app", properties=PROPERTIES) as process:
        yield process


def kernel_queued(port: int) -> int:
    """The bytes the kernel holds on the TCP connections of 127.0.0.1:`port`, from /proc/net/tcp: at the
    server's end what it has written and the reader has not acknowledged (tx_queue), at the reader's end
    what has arrived and its process has not read (rx_queue)."""
    queued = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
        if port in ports:
            tx, rx = fields[4].split(":")
            queued += int(tx, 16) + int(rx, 16)
    return queued


async def test_a_slow_reader_keeps_the_servers_memory_within_the_window(
    platform: Platform, lean_server: UvicornProcess
) -> None:
    po = PostOffice(platform)
    url = lean_server.event_url
    # warm up: the first stream of big segments loads code and sizes the allocator's arenas
    await collect(po.stream("stream.count", {"count": 2 * WINDOW, "size": BIG}, endpoint=url))
    before = await idle_state(po, lean_server)
    rss = [before["rss_kb"]]

    read = 0
    async for datum in po.stream("stream.endless", {"size": BIG}, endpoint=url).data():
        assert datum == segment(read, BIG)
        read += 1
        if read % 50 == 0:
            rss.append((await server_state(po, lean_server))["rss_kb"])
        if read == 300:
            break
        await asyncio.sleep(0.004)
    await stopped_since(po, lean_server, before, timeout=3)
    after = await server_state(po, lean_server)
    rss.append(after["rss_kb"])

    through_kb = 300 * BIG // KB  # 19,200 KB went through the server
    grown_kb = max(rss) - before["rss_kb"]
    print(f"\nslow reader: {through_kb} KB through, server RSS {before['rss_kb']} KB -> {rss[1:]} KB")
    assert after["peak_outstanding"] <= WINDOW
    assert grown_kb <= HELD_KB, f"the server grew by {grown_kb} KB for {through_kb} KB through"


async def test_a_reader_that_stops_reading_holds_the_producer(
    platform: Platform, lean_server: UvicornProcess
) -> None:
    po = PostOffice(platform)
    url = lean_server.event_url
    before = await idle_state(po, lean_server)
    stream = po.stream("stream.endless", {"size": BIG}, endpoint=url)
    assert stream_signal(await anext(stream)) == DATA  # the POST is out: one segment read, then no more

    # the producer runs until everything between it and the reader is full, then waits for credit
    seen: list[dict[str, int]] = []

    async def settled() -> bool:
        seen.append(await server_state(po, lean_server))
        return len(seen) >= 6 and len({s["produced"] for s in seen[-6:]}) == 1  # the same for 0.3 s and more

    await eventually(settled, timeout=10, what="the producer waiting for credit", describe=lambda: seen[-6:])
    await asyncio.sleep(1)  # and still, a second later
    held = await server_state(po, lean_server)
    queued = kernel_queued(lean_server.port)
    ahead = held["produced"] - before["produced"]
    await stream.aclose()
    await stopped_since(po, lean_server, before, timeout=3)

    assert held["producing"] == 1 and held["stopped"] == before["stopped"], "it waits, it has not given up"
    assert held["produced"] == seen[-1]["produced"], "nothing produced while nobody read"
    # Where the segments the producer ran ahead are, between it and a reader that read one:
    # - at most WINDOW sent and not credited (in the server's own reader's queue, or already written: it
    #   grants credit for what it has taken, in quarters of the window);
    # - the kernel's buffers of the connection, autotuned (here they grow to megabytes on loopback; the
    #   ceiling is tcp_wmem + tcp_rmem): measured, not guessed, from the connection's queues;
    # - user space: the reader's aiohttp stops reading past 2 x 64 KB buffered but takes up to 256 KB in
    #   one socket read (6 frames), and the first read moved as much again into the stream's own queue
    #   (6); uvicorn pauses the server past its 64 KB write-buffer mark (2 frames) and Starlette holds the
    #   frame it is sending (1): 15 frames, 16 allowed. A 64 KB text segment's frame is 64 KB and 8 bytes.
    in_kernel = -(-queued // BIG)
    bound = 1 + WINDOW + in_kernel + 16
    print(
        f"\nstalled reader: the producer ran {ahead} segments ({ahead * BIG // KB} KB) ahead of a reader "
        f"that read 1; {queued // KB} KB ({in_kernel} frames) in the kernel's queues; bound {bound}; "
        f"server RSS {before['rss_kb']} -> {held['rss_kb']} KB"
    )
    assert WINDOW < ahead <= bound
    # the kernel's buffers are not the server's memory: what it holds itself is what the window holds
    assert held["rss_kb"] - before["rss_kb"] <= HELD_KB
