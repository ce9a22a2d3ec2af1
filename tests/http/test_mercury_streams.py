"""Event streams over HTTP with a real Mercury peer: mercury-composable (a dev dependency) on the other side.

- meshkit reads a mercury stream: interceptor functions (the only kind that streams) hosted by
  mercury-composable's ``EventApiServer`` (aiohttp, in this process) write with its ``EventStreamWriter``;
  meshkit's ``PostOffice.stream(..., endpoint=...)`` reads them as Server-Sent Events in the engines' dialect.
- mercury reads a meshkit stream: mercury-composable's ``PostOffice.stream`` reads the streaming functions
  of ``tests/apps/streaming.py`` under ``meshkit run`` (a process of its own), and those of a small app of
  edge cases written to a temporary directory (texts and names that test the dialect, the head's x-ttl).

The dialect: docs/protocol/streams.md. Single-shot Event over HTTP both ways: test_mercury_interop.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiohttp import web

from meshkit import AppError, EventEnvelope, Platform, PostOffice
from meshkit.core import DATA, EOF, EXCEPTION, STREAM_CALLER_REQUIRED, X_EVENT_NAME, X_EVENT_STREAM
from meshkit.testing import running_platform
from tests.support.servers import HOST, UvicornProcess

# Importing mercury-composable configures logging for the whole process (see test_mercury_interop.py): put
# the root logger back as it was, so the other tests of the session run as they would without it.
_root_logger = logging.getLogger()
_root_handlers, _root_level = list(_root_logger.handlers), _root_logger.level
import mercury_composable as mercury  # noqa: E402
from mercury_composable import event_stream as mercury_stream  # noqa: E402

_root_logger.handlers[:] = _root_handlers
_root_logger.setLevel(_root_level)

MANY = 10_000
LARGE = 100_000  # characters (bytes) of one segment: well over 64 KB
IDLE = 5.0  # seconds: the idle allowance of the streams read here, unless a test says otherwise

# Texts a raw frame carries (after an envelope-frame head): SSE line rules, field look-alikes, non-ASCII,
# and characters that str.splitlines would break at but SSE does not (VT, FF, FS, NEL, LINE SEPARATOR).
TEXTS = [
    "",
    "\n",
    "\n\n",
    "a\n\nb",
    " leading space",
    "  two leading spaces",
    "trailing newline\n",
    "é🙂 ünïcödé 中文",
    ":not a comment",
    "data: inner",
    "event: envelope",
    "id: 7\nretry: 5",
    "\x00nul",
    "tab\there",
    "a\x0bb\x0cc\x1cd\x85e\u2028f",
    "x" * 5000,
]
# Data that rides envelope frames: not text, or text with a CR (SSE turns every line ending into LF).
VALUES = [0, True, 3.5, b"", b"\xff\x00", {"k": None}, [], {"nested": {"a": [1, 2]}}, "cr\r", "crlf\r\n"]
# (name, data): a name on a raw frame, the reserved name "envelope" (an envelope frame), a named value.
NAMED = [
    ("token", "t"),
    ("two words", "w"),
    ("ünï", "u"),
    ("envelope", "not a frame"),
    ("progress", {"d": 1}),
]


def marker(segment: EventEnvelope | mercury.EventEnvelope) -> str | None:
    return segment.headers.get(X_EVENT_STREAM)


def error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "status": status, "message": message}


# -- meshkit reads a mercury-composable stream ---------------------------------------------------------------


class ObservedRegistry(mercury.FunctionRegistry):
    """mercury's registry, counting the segments dropped by its reply sinks: a sink is gone once the request
    completed, timed out or its client disconnected, and mercury drops every later write."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def send_event(self, event: mercury.EventEnvelope) -> bool:
        taken = super().send_event(event)
        self.dropped += not taken
        return taken


@dataclass
class MercuryPeer:
    """mercury-composable's Event API server, and what its endless producer did."""

    event_url: str
    registry: ObservedRegistry
    headers: list[dict[str, str]] = field(default_factory=list)  # what mercury.texts' handler was given
    endless_written: int = 0  # the segments mercury.endless wrote that were not dropped
    endless_stopped: asyncio.Event = field(default_factory=asyncio.Event)


def host(peer: MercuryPeer) -> None:
    """Register the mercury functions of these tests."""
    registry = peer.registry

    def writer(event: mercury.EventEnvelope) -> mercury.EventStreamWriter:
        return mercury.EventStreamWriter.from_request(event, registry=registry)

    async def written(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        out.first(200, "text/plain")
        out.write("one")
        out.write("two\nlines")
        out.write_named("token", "hi")
        out.write_named("progress", {"done": 1})
        out.write(b"\x00\x01\xff")
        out.write({"k": [1, "two", None], "pi": 3.14})
        out.write(["a", 2])
        out.write(None)  # a bare segment after the head: nothing on the wire (the dialect)
        out.write("with\r\ncarriage return")
        out.close({"segments": 8, "usage": {"tokens": 3}})

    async def texts(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        peer.headers.append(headers)
        out = writer(event)
        for item in event.body["data"]:
            out.write(item)
        for name, item in event.body["named"]:
            out.write_named(name, item)
        out.close()

    async def head(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        out.first(206, "application/x-ndjson", ttl_seconds=7)
        out.write("partial")
        out.close()

    async def only_eof(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        writer(event).first(202, "text/plain").close({"nothing": "to say"})

    async def quiet(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        """One segment, a quiet spell, then another: the head's x-ttl (seconds) is the relay's allowance."""
        out = writer(event)
        out.first(200, "text/plain", ttl_seconds=event.body["ttl"])
        out.write("first")
        await asyncio.sleep(event.body["quiet"])
        out.write("late")
        out.close()

    async def failing(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        for item in range(event.body["before"]):
            out.write(item)
        out.fail(mercury.AppException(409, "the producer gave up"))
        out.write("after the end")  # dropped by the writer

    async def crashing(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        out.write("before")
        await asyncio.sleep(0.01)  # the head goes out, then the handler raises mid-stream
        raise RuntimeError("boom")

    async def many(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        for index in range(MANY):
            out.write(f"{index:05d}")
            if index % 500 == 0:
                await asyncio.sleep(0)
        out.close()

    async def large(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        out.write("head")
        out.write("t" * LARGE)  # a raw frame
        out.write(bytes(range(256)) * (LARGE // 256))  # an envelope frame
        out.write_named("big", "n" * LARGE)
        out.close()

    async def endless(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        out = writer(event)
        try:
            while True:
                dropped = registry.dropped
                out.write(peer.endless_written)
                if registry.dropped > dropped:  # mercury dropped it: nobody reads this stream any more
                    return
                peer.endless_written += 1
                await asyncio.sleep(0.002)
        finally:
            peer.endless_stopped.set()

    async def single(headers: dict[str, str], event: mercury.EventEnvelope) -> None:
        """An interceptor that answers once, unmarked: the classic single-shot reply."""
        reply = mercury.EventEnvelope(to=event.reply_to, body={"once": event.body}).set_status(201)
        registry.send_event(reply)

    async def plain(headers: dict[str, str], body: Any) -> dict[str, Any]:
        return {"plain": body}

    interceptors = {
        "mercury.written": written,
        "mercury.texts": texts,
        "mercury.head": head,
        "mercury.eof": only_eof,
        "mercury.quiet": quiet,
        "mercury.fail": failing,
        "mercury.crash": crashing,
        "mercury.many": many,
        "mercury.large": large,
        "mercury.endless": endless,
        "mercury.single": single,
    }
    for route, handler in interceptors.items():
        registry.register(route, handler, interceptor=True)
    registry.register("mercury.plain", plain)


@pytest.fixture
async def mercury_peer() -> AsyncIterator[MercuryPeer]:
    registry = ObservedRegistry()
    runner = web.AppRunner(mercury.EventApiServer(registry).create_app(), shutdown_timeout=2)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, 0).start()  # a free port, chosen by the system
        port = runner.addresses[0][1]
        peer = MercuryPeer(f"http://{HOST}:{port}/api/event", registry)
        host(peer)
        yield peer
    finally:
        await runner.cleanup()
        await registry.bus.close()  # the function workers, started on first use


@pytest.fixture
def mercury_keep_alive() -> Iterator[None]:
    """mercury's keep-alive comment every 100 ms (event.stream.keep.alive, read per stream), not 30 s."""
    config = mercury.app_config()
    before = config.get("event.stream.keep.alive")
    config.set("event.stream.keep.alive", "100ms")
    try:
        yield
    finally:
        config.set("event.stream.keep.alive", before)  # None reads as the default, 30 s


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    """The meshkit caller: an app with no functions that reaches Mercury only over HTTP."""
    async with running_platform([], name="stream-caller") as caller:
        yield caller


async def read_all(
    platform: Platform,
    peer: MercuryPeer,
    route: str | EventEnvelope,
    body: Any = None,
    idle: float = IDLE,
    headers: dict[str, str] | None = None,
) -> list[EventEnvelope]:
    stream = PostOffice(platform).stream(route, body, headers, timeout=idle, endpoint=peer.event_url)
    async with stream:
        return [segment async for segment in stream]


async def test_meshkit_reads_what_a_mercury_writer_wrote_in_order_with_names_markers_and_metadata(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    request = EventEnvelope("mercury.written", "x", cid="cid-42")
    segments = await read_all(platform, mercury_peer, request)

    assert [marker(s) for s in segments] == [DATA] * 8 + [EOF]
    assert [s.body for s in segments] == [
        "one",
        "two\nlines",
        "hi",
        {"done": 1},
        b"\x00\x01\xff",
        {"k": [1, "two", None], "pi": 3.14},
        ["a", 2],
        "with\r\ncarriage return",
        {"segments": 8, "usage": {"tokens": 3}},
    ]
    assert [s.headers.get(X_EVENT_NAME) for s in segments] == [None, None, "token", "progress", *[None] * 5]
    assert [s.status for s in segments] == [200] * 9
    first = segments[0]
    assert first.headers == {X_EVENT_STREAM: DATA, "content-type": "text/plain"}
    assert first.sender == "mercury.written"  # an envelope frame: the producer's own envelope
    assert segments[1].headers == {X_EVENT_STREAM: DATA}  # a raw frame: the marker alone
    assert segments[2].headers == {X_EVENT_STREAM: DATA, X_EVENT_NAME: "token"}
    assert {s.cid for s in segments} == {"cid-42"}
    assert all(s.to is None and s.reply_to is None for s in segments)


async def test_meshkit_reads_mercury_texts_values_and_names_as_written(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    body = {"data": ["head", *TEXTS, *VALUES], "named": NAMED}
    segments = await read_all(platform, mercury_peer, "mercury.texts", body, headers={"lang": "en"})

    assert [marker(s) for s in segments] == [DATA] * (1 + len(TEXTS) + len(VALUES) + len(NAMED)) + [EOF]
    assert [s.body for s in segments[:-1]] == ["head", *TEXTS, *VALUES, *(data for _, data in NAMED)]
    names = [s.headers.get(X_EVENT_NAME) for s in segments[:-1]]
    assert names == [None] * (1 + len(TEXTS) + len(VALUES)) + [name for name, _ in NAMED]
    assert mercury_peer.headers == [{"lang": "en"}]  # meshkit's stream request adds no header of its own


async def test_meshkit_gets_the_head_status_content_type_and_ttl_of_a_mercury_stream(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    segments = await read_all(platform, mercury_peer, "mercury.head")

    assert [(marker(s), s.status, s.body) for s in segments] == [(DATA, 206, "partial"), (EOF, 200, None)]
    assert segments[0].headers == {X_EVENT_STREAM: DATA, "content-type": "application/x-ndjson", "x-ttl": "7"}

    [only] = await read_all(platform, mercury_peer, "mercury.eof")  # no data: the head rides the EOF
    assert (marker(only), only.status, only.body) == (EOF, 202, {"nothing": "to say"})
    assert only.headers.get("content-type") == "text/plain"


async def test_meshkit_gets_a_mercury_fail_as_an_exception_segment_with_its_status(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    segments = await read_all(platform, mercury_peer, "mercury.fail", {"before": 2})

    assert [(marker(s), s.status) for s in segments] == [(DATA, 200), (DATA, 200), (EXCEPTION, 409)]
    assert [s.body for s in segments[:2]] == [0, 1]
    assert segments[-1].body == error(409, "the producer gave up")

    [failed] = await read_all(platform, mercury_peer, "mercury.fail", {"before": 0})  # the head fails
    assert (marker(failed), failed.status, failed.body) == (
        EXCEPTION,
        409,
        error(409, "the producer gave up"),
    )

    stream = PostOffice(platform).stream(
        "mercury.fail", {"before": 2}, timeout=IDLE, endpoint=mercury_peer.event_url
    )
    data = []
    with pytest.raises(AppError) as raised:
        async for body in stream.data():
            data.append(body)
    assert data == [0, 1]
    assert (raised.value.status, raised.value.message) == (409, "the producer gave up")


async def test_meshkit_gets_a_mercury_handler_crash_mid_stream_in_band_as_a_500(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    segments = await read_all(platform, mercury_peer, "mercury.crash")

    assert [(marker(s), s.status) for s in segments] == [(DATA, 200), (EXCEPTION, 500)]
    assert segments[-1].body == error(500, "boom")


async def test_meshkit_reads_ten_thousand_mercury_segments_in_order(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    stream = PostOffice(platform).stream("mercury.many", timeout=IDLE, endpoint=mercury_peer.event_url)
    bodies = [body async for body in stream.data()]

    assert bodies == [f"{index:05d}" for index in range(MANY)]


async def test_meshkit_reads_mercury_segments_over_64_kb(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    segments = await read_all(platform, mercury_peer, "mercury.large")

    assert [marker(s) for s in segments] == [DATA] * 4 + [EOF]
    assert segments[1].body == "t" * LARGE
    assert segments[2].body == bytes(range(256)) * (LARGE // 256)
    assert (segments[3].headers.get(X_EVENT_NAME), segments[3].body) == ("big", "n" * LARGE)


async def test_meshkit_stopping_early_closes_the_connection_and_the_mercury_producer_stops(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    stream = PostOffice(platform).stream("mercury.endless", timeout=IDLE, endpoint=mercury_peer.event_url)
    got = []
    async with stream:
        async for segment in stream:
            got.append(segment.body)
            if len(got) == 5:
                break
    assert got == [0, 1, 2, 3, 4]

    # mercury notices on its next write to the closed connection and closes the request's reply sink; the
    # producer's next segment is dropped, and its loop ends
    await asyncio.wait_for(mercury_peer.endless_stopped.wait(), 5)
    assert mercury_peer.registry.dropped == 1
    assert mercury_peer.endless_written < 100, "the mercury producer went on long after the reader left"


async def test_meshkit_gets_the_408_of_a_mercury_relay_whose_head_x_ttl_passed(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    """mercury's relay allows the head's x-ttl (1 s here) between segments, not the caller's 5 s."""
    started = time.monotonic()
    segments = await read_all(platform, mercury_peer, "mercury.quiet", {"ttl": 1, "quiet": 2.5})

    assert [(marker(s), s.body) for s in segments] == [
        (DATA, "first"),
        (EXCEPTION, error(408, "Timeout for 1 seconds")),
    ]
    assert segments[-1].status == 408
    assert 0.9 < time.monotonic() - started < 2.0


async def test_meshkit_reads_across_mercury_keep_alives_and_they_count_for_its_idle_allowance(
    platform: Platform, mercury_peer: MercuryPeer, mercury_keep_alive: None
) -> None:
    """streams.md: no byte within the idle allowance (a keep-alive counts) ends the stream with a 408; as
    mercury's own reader (its socket read timeout), meshkit's waits out a quiet producer that pings."""
    segments = await read_all(platform, mercury_peer, "mercury.quiet", {"ttl": 5, "quiet": 0.5}, idle=2)
    assert [(marker(s), s.body) for s in segments] == [(DATA, "first"), (DATA, "late"), (EOF, None)]

    # 1.5 s quiet, a keep-alive every 100 ms, meshkit's allowance 1 s, mercury's relay's (the head's) 10 s
    segments = await read_all(platform, mercury_peer, "mercury.quiet", {"ttl": 10, "quiet": 1.5}, idle=1)
    assert [(marker(s), s.body) for s in segments] == [(DATA, "first"), (DATA, "late"), (EOF, None)]


async def test_meshkit_ends_a_quiet_mercury_stream_with_a_408_after_its_idle_allowance(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    started = (
        time.monotonic()
    )  # no keep-alive for 30 s: mercury's relay would wait 10 s, meshkit's reader 1 s
    segments = await read_all(platform, mercury_peer, "mercury.quiet", {"ttl": 10, "quiet": 1.5}, idle=1)

    assert [(marker(s), s.status) for s in segments] == [(DATA, 200), (EXCEPTION, 408)]
    assert 0.9 < time.monotonic() - started < 1.4


async def test_meshkit_stream_of_a_mercury_function_that_does_not_stream_yields_its_one_reply(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    [reply] = await read_all(platform, mercury_peer, "mercury.plain", {"a": 1})
    assert (marker(reply), reply.status, reply.body) == (None, 200, {"plain": {"a": 1}})
    assert reply.sender == "mercury.plain"

    [once] = await read_all(platform, mercury_peer, "mercury.single", "q")  # an interceptor answering once
    assert (marker(once), once.status, once.body) == (None, 201, {"once": "q"})

    stream = PostOffice(platform).stream("mercury.plain", 7, timeout=IDLE, endpoint=mercury_peer.event_url)
    assert [body async for body in stream.data()] == [{"plain": 7}]

    [refused] = await read_all(platform, mercury_peer, "mercury.missing")
    assert (marker(refused), refused.status, refused.body) == (None, 404, "Route mercury.missing not found")


async def test_meshkit_single_shot_request_to_a_mercury_streaming_function_gets_406(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    with pytest.raises(AppError) as refused:
        await PostOffice(platform).request("mercury.written", "x", timeout=2, endpoint=mercury_peer.event_url)

    assert (refused.value.status, refused.value.message) == (406, mercury_stream.STREAM_CALLER_REQUIRED)


# -- mercury-composable reads a meshkit stream ---------------------------------------------------------------

EDGE_MODULE = "mercury_stream_edges"
EDGE_SOURCE = '''
"""Streaming functions for tests/http/test_mercury_streams.py, written to a temporary directory."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from meshkit import EventStreamWriter, FunctionRegistry, create_app

registry = FunctionRegistry()


@registry.route("edge.echo")
async def echo(body: Any) -> AsyncIterator[Any]:
    """Each item of body["data"], then each [name, item] of body["named"] under its name."""
    for item in body["data"]:
        yield item


@registry.route("edge.written")
async def written(headers: dict[str, str], body: Any, out: EventStreamWriter) -> None:
    for item in body["data"]:
        await out.write(item)
    for name, item in body["named"]:
        await out.write_named(name, item)
    await out.close()


@registry.route("edge.quiet")
async def quiet(headers: dict[str, str], body: Any, out: EventStreamWriter) -> None:
    """One segment, a quiet spell, then another: the head's x-ttl (seconds) is the relay's allowance."""
    out.first(200, "text/plain", ttl_seconds=body["ttl"])
    await out.write("first")
    await asyncio.sleep(body["quiet"])
    await out.write("late")
    await out.close()


app = create_app(name="stream-edges", config_dir=Path(__file__).parent, functions=registry)
'''


@pytest.fixture(scope="module")
def meshkit_app() -> Iterator[UvicornProcess]:
    """tests/apps/streaming.py under ``meshkit run``, its keep-alive every 200 ms (not 30 s)."""
    with UvicornProcess("tests.apps.streaming:app", properties={"stream.keep.alive": "0.2"}) as process:
        yield process


@pytest.fixture(scope="module")
def edge_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornProcess]:
    """The edge cases' app under ``meshkit run``, its module in a temporary directory, keep-alive 200 ms."""
    app_dir = tmp_path_factory.mktemp("mercury-streams")
    (app_dir / f"{EDGE_MODULE}.py").write_text(EDGE_SOURCE)
    extra_args = ["--app-dir", str(app_dir)]
    properties = {"stream.keep.alive": "0.2"}
    with UvicornProcess(f"{EDGE_MODULE}:app", properties=properties, extra_args=extra_args) as process:
        yield process


@pytest.fixture
async def mercury_post_office() -> AsyncIterator[mercury.PostOffice]:
    async with mercury.PostOffice() as post_office:  # closes its aiohttp session
        yield post_office


async def mercury_read(
    post_office: mercury.PostOffice, app: UvicornProcess, route: str, body: Any = None, idle: float = IDLE
) -> list[mercury.EventEnvelope]:
    stream = open_mercury_stream(post_office, app.event_url, route, body, idle)
    async with contextlib.aclosing(stream):  # an async generator: closed at once, not when collected
        return [segment async for segment in stream]


def open_mercury_stream(
    post_office: mercury.PostOffice, endpoint: str, route: str, body: Any, idle: float
) -> AsyncGenerator[mercury.EventEnvelope, None]:
    stream = post_office.stream(route, body, timeout_ms=int(idle * 1000), endpoint=endpoint)
    return cast("AsyncGenerator[mercury.EventEnvelope, None]", stream)  # what it is, typed AsyncIterator


async def meshkit_state(post_office: mercury.PostOffice, app: UvicornProcess) -> dict[str, Any]:
    reply = await post_office.request("stream.state", timeout_ms=2000, endpoint=app.event_url)
    assert reply.get_status() == 200, reply.body
    state: dict[str, Any] = reply.body
    return state


def padded(index: int, size: int) -> str:
    text = f"{index:08d}"
    return text + "x" * (size - len(text))


async def test_mercury_reads_a_meshkit_stream_in_order(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.count", {"count": 5})

    assert [marker(s) for s in segments] == [DATA] * 5 + [EOF]
    assert [s.body for s in segments[:5]] == [f"{index:08d}" for index in range(5)]
    assert segments[0].sender == "stream.count"
    assert all(s.get_status() == 200 for s in segments)

    [only] = await mercury_read(mercury_post_office, meshkit_app, "stream.count", {"count": 0})
    assert (marker(only), only.get_status(), only.body) == (EOF, 200, None)


async def test_mercury_reads_ten_thousand_meshkit_segments(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.count", {"count": MANY})

    assert [s.body for s in segments[:-1]] == [f"{index:08d}" for index in range(MANY)]
    assert marker(segments[-1]) == EOF


async def test_mercury_reads_meshkit_segments_over_64_kb(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    body = {"count": 3, "size": LARGE}
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.count", body)

    assert [s.body for s in segments[:-1]] == [padded(index, LARGE) for index in range(3)]
    assert marker(segments[-1]) == EOF


async def test_mercury_reads_what_a_meshkit_writer_wrote(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.written")

    assert [marker(s) for s in segments] == [DATA, DATA, DATA, EOF]
    assert [s.body for s in segments] == ["one", {"done": 1}, b"\x00\x01", {"segments": 3}]
    assert segments[0].headers.get("content-type") == "text/plain"
    assert [s.get_status() for s in segments] == [200] * 4
    assert [mercury_stream.stream_event_name(s) for s in segments] == [None, "progress", None, None]


async def test_mercury_reads_meshkit_texts_values_and_names_as_written(
    mercury_post_office: mercury.PostOffice, edge_app: UvicornProcess
) -> None:
    data = ["head", *TEXTS, *VALUES]
    segments = await mercury_read(mercury_post_office, edge_app, "edge.echo", {"data": data, "named": []})
    assert [marker(s) for s in segments] == [DATA] * len(data) + [EOF]
    assert [s.body for s in segments[:-1]] == data

    body = {"data": ["head", "a", None, "b"], "named": NAMED}  # a bare segment after the head: nothing sent
    segments = await mercury_read(mercury_post_office, edge_app, "edge.written", body)
    assert [s.body for s in segments[:-1]] == ["head", "a", "b", *(item for _, item in NAMED)]
    names = [mercury_stream.stream_event_name(s) for s in segments[:-1]]
    assert names == [None, None, None, *(name for name, _ in NAMED)]
    assert marker(segments[-1]) == EOF


async def test_mercury_gets_a_meshkit_failure_as_an_exception_with_the_standard_error_body(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    body = {"before": 2, "status": 409, "message": "the producer gave up"}
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.fail", body)

    assert [(marker(s), s.get_status()) for s in segments] == [(DATA, 200), (DATA, 200), (EXCEPTION, 409)]
    assert [s.body for s in segments[:2]] == [0, 1]
    assert segments[-1].body == error(409, "the producer gave up")
    assert segments[-1].has_error()

    body = {"before": 0, "status": 503, "message": "not now"}  # the function raises before its first segment
    [failed] = await mercury_read(mercury_post_office, meshkit_app, "stream.fail", body)
    assert (marker(failed), failed.get_status(), failed.body) == (EXCEPTION, 503, error(503, "not now"))


async def test_mercury_reads_across_meshkit_keep_alives_and_gets_its_idle_408(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.quiet", {"seconds": 0.7})
    assert [(marker(s), s.body) for s in segments] == [(DATA, "first"), (DATA, "late"), (EOF, None)]

    # meshkit's relay pings every 200 ms, which keeps mercury's socket read alive: the 408 is the relay's
    started = time.monotonic()
    segments = await mercury_read(mercury_post_office, meshkit_app, "stream.quiet", {"seconds": 3}, idle=1)
    assert [(marker(s), s.get_status()) for s in segments] == [(DATA, 200), (EXCEPTION, 408)]
    assert segments[-1].body["type"] == "error" and segments[-1].body["status"] == 408
    assert 0.9 < time.monotonic() - started < 1.6


# The head's x-ttl (seconds) is the relay's idle allowance between the segments after it, shorter or longer
# than the caller's (its x-ttl header): (head x-ttl, the producer's quiet spell, the caller's idle allowance,
# what the caller reads). Keep-alives every 100-200 ms keep mercury's socket read alive meanwhile.
HEAD_TTL_CASES = [
    pytest.param(1, 2.5, 5, [(DATA, "first"), (EXCEPTION, 408)], id="shorter"),
    pytest.param(3, 1.5, 1, [(DATA, "first"), (DATA, "late"), (EOF, 200)], id="longer"),
]


@pytest.mark.parametrize(("ttl", "quiet", "idle", "expected"), HEAD_TTL_CASES)
async def test_mercurys_relay_allows_the_head_x_ttl_between_segments(
    mercury_post_office: mercury.PostOffice,
    mercury_peer: MercuryPeer,
    mercury_keep_alive: None,
    ttl: int,
    quiet: float,
    idle: float,
    expected: list[tuple[str, Any]],
) -> None:
    """The reference: mercury's own client reading mercury's own relay (server.py, _stream_response)."""
    body = {"ttl": ttl, "quiet": quiet}
    stream = open_mercury_stream(mercury_post_office, mercury_peer.event_url, "mercury.quiet", body, idle)
    async with contextlib.aclosing(stream):
        segments = [segment async for segment in stream]

    got = [(marker(s), s.body if marker(s) == DATA else s.get_status()) for s in segments]
    assert got == expected


@pytest.mark.parametrize(("ttl", "quiet", "idle", "expected"), HEAD_TTL_CASES)
async def test_meshkits_relay_allows_the_head_x_ttl_between_segments_as_mercurys_does(
    mercury_post_office: mercury.PostOffice,
    edge_app: UvicornProcess,
    ttl: int,
    quiet: float,
    idle: float,
    expected: list[tuple[str, Any]],
) -> None:
    """streams.md: the head's x-ttl is "the producer's idle allowance in *seconds* for the segments after it,
    honoured by an HTTP relay"; mercury's relay honours it (the test above)."""
    started = time.monotonic()
    segments = await mercury_read(
        mercury_post_office, edge_app, "edge.quiet", {"ttl": ttl, "quiet": quiet}, idle
    )

    got = [(marker(s), s.body if marker(s) == DATA else s.get_status()) for s in segments]
    assert got == expected, (
        f"{[(marker(s), s.body) for s in segments]} after {time.monotonic() - started:.2f} s"
    )


async def test_mercury_stream_of_a_meshkit_function_that_does_not_stream_is_its_one_reply(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    [reply] = await mercury_read(mercury_post_office, meshkit_app, "stream.state")
    assert (marker(reply), reply.get_status()) == (None, 200)
    assert {"started", "stopped", "produced", "producing"} <= set(reply.body)
    assert reply.sender == "stream.state"

    [missing] = await mercury_read(mercury_post_office, meshkit_app, "stream.missing")
    assert (marker(missing), missing.get_status(), missing.body) == (
        None,
        404,
        "Route stream.missing not found",
    )


async def test_mercury_stopping_early_stops_the_meshkit_producer(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    before = await meshkit_state(mercury_post_office, meshkit_app)
    stream = open_mercury_stream(
        mercury_post_office, meshkit_app.event_url, "stream.endless", {"delay": 0.001}, IDLE
    )
    got = []
    async with contextlib.aclosing(stream):
        async for segment in stream:
            got.append(segment.body)
            if len(got) == 5:
                break
    assert got == [0, 1, 2, 3, 4]

    deadline = time.monotonic() + 5
    while True:
        state = await meshkit_state(mercury_post_office, meshkit_app)
        if state["stopped"] == before["stopped"] + 1 and state["producing"] == 0:
            break
        assert time.monotonic() < deadline, f"the meshkit producer did not stop: {state} (before: {before})"
        await asyncio.sleep(0.05)
    assert state["started"] == before["started"] + 1


async def test_mercury_single_shot_request_to_a_meshkit_streaming_function_gets_406(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    before = await meshkit_state(mercury_post_office, meshkit_app)
    reply = await mercury_post_office.request(
        "stream.endless", None, timeout_ms=2000, endpoint=meshkit_app.event_url
    )

    assert (reply.get_status(), reply.body) == (406, mercury_stream.STREAM_CALLER_REQUIRED)
    assert reply.body == STREAM_CALLER_REQUIRED
    assert (await meshkit_state(mercury_post_office, meshkit_app))["started"] == before[
        "started"
    ]  # never ran
