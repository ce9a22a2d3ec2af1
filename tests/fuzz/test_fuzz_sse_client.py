"""Target 7, meshkit's stream reader over HTTP (meshkit/http/_reading.py): what a peer's /api/event answers.

One real aiohttp server on 127.0.0.1 for the module answers ``POST /api/event`` with ``text/event-stream``
and the body the test put in ``Slot.answer`` just before the call, cut into chunks with small awaits between
them, then ended, or left hanging (never ending), or the connection dropped. meshkit's
``PostOffice.stream(..., endpoint=..., timeout=1)`` reads it to its end. The bodies: arbitrary bytes and
pieces of the dialect, and valid streams (an envelope-frame head, raw and envelope frames, a terminal;
comments, stray fields, a BOM, CRLF or CR line endings) with or without one corruption (truncated, a byte
flipped, garbage base64 in an envelope frame, a raw frame before the head, a line over the limit).

For every input the reader never raises, never yields after a terminal, and ends with exactly one terminal
(EOF or EXCEPTION); an EXCEPTION it made itself has status 408, 500, 502 or 503; the segments of a valid
stream come out unchanged up to the corruption (all of them when there is none); a hanging server costs the
idle allowance plus a margin, no more; and the server's handler ends soon after (the connection was closed).

Plain cases: an answer that is neither SSE nor an envelope, an HTTP 500 with an envelope, a server process
killed mid-stream (a real subprocess), an unmarked envelope frame after the head (streams.md: a failure),
and a connection dropped after the last frame had arrived, read by a slow reader.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from meshkit import CodecError, EventEnvelope, Platform, PostOffice, encode
from meshkit.core import (
    DATA,
    EOF,
    EXCEPTION,
    TEXT_EVENT_STREAM,
    X_EVENT_NAME,
    X_EVENT_STREAM,
    error_message,
    stream_signal,
)
from meshkit.http._sse import MALFORMED, MISSING_HEAD
from meshkit.testing import running_platform
from tests.fuzz import Errors, describe, event_loop, fuzz_settings, fuzz_timeout, tally, valid_envelopes
from tests.support.servers import HOST

HANG_SHARE = 0.04  # a hanging server costs the idle allowance (1 s) per input: a few of them
pytestmark = pytest.mark.timeout(fuzz_timeout(0.05) + fuzz_timeout(1.5, HANG_SHARE))

ROUTE = "fuzz.stream"
CID = "fuzz-cid-1"
IDLE = 1.0  # seconds: the reader's idle allowance
MARGIN = 0.75  # seconds: what a hanging server may cost beyond it (a busy machine included)
MAX_EVENT_SIZE = 4096  # the reader's frame limit is twice this
LIMIT = 2 * MAX_EVENT_SIZE
READER_STATUSES = {408, 500, 502, 503}
SSE_TYPES = ["text/event-stream; charset=utf-8", "Text/Event-Stream"]  # what Starlette sends; any case


# -- the server --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """What the server answers to the next POST."""

    body: bytes = b""
    cuts: list[int] = field(default_factory=list)  # where the body is cut into chunks
    pause: float = 0.0  # seconds between chunks (0: one turn of the loop)
    then: str = "end"  # after the body: "end" the response, "hang" (never end it) or "drop" the connection
    status: int = 200
    content_type: str = TEXT_EVENT_STREAM

    def chunks(self) -> list[bytes]:
        bounds = [0, *sorted(c for c in self.cuts if 0 < c < len(self.body)), len(self.body)]
        return [self.body[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    def __repr__(self) -> str:
        return (
            f"Answer({describe(self.body, 600)}, cuts={self.cuts}, pause={self.pause}, then={self.then!r}, "
            f"status={self.status}, content_type={self.content_type!r})"
        )


class Slot:
    """The module's one answer, set just before each call, and the handlers still running."""

    answer = Answer()
    running = 0
    idle: asyncio.Event  # set while no handler runs (made in the module's loop)


async def handle(request: web.Request) -> web.StreamResponse:
    answer = Slot.answer
    Slot.running += 1
    Slot.idle.clear()
    try:
        await request.read()
        response = web.StreamResponse(status=answer.status, headers={"content-type": answer.content_type})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the reader may go first (it had its terminal)
            for chunk in answer.chunks():
                await response.write(chunk)
                await asyncio.sleep(answer.pause)
            if answer.then == "hang":
                await asyncio.Event().wait()  # until the reader goes: the handler is cancelled then
            if answer.then == "drop":
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write_eof()
        return response
    finally:
        Slot.running -= 1
        if not Slot.running:
            Slot.idle.set()


@dataclass
class Reader:
    runner: asyncio.Runner
    errors: Errors
    platform: Platform
    endpoint: str


@pytest.fixture(scope="module")
def reader() -> Iterator[Reader]:
    with event_loop() as (runner, errors):

        async def start() -> tuple[web.AppRunner, contextlib.AsyncExitStack, Reader]:
            Slot.idle = asyncio.Event()
            app = web.Application()
            app.router.add_post("/api/event", handle)
            server = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
            await server.setup()
            await web.TCPSite(server, HOST, 0).start()
            port = server.addresses[0][1]
            stack = contextlib.AsyncExitStack()
            properties = {"max.event.size": str(MAX_EVENT_SIZE)}
            platform = await stack.enter_async_context(
                running_platform([], name="fuzz-sse-reader", properties=properties)
            )
            return server, stack, Reader(runner, errors, platform, f"http://{HOST}:{port}/api/event")

        server, stack, started = runner.run(start())
        try:
            yield started
        finally:
            runner.run(stack.aclose())
            runner.run(server.cleanup())


@dataclass
class Outcome:
    segments: list[EventEnvelope]
    seconds: float
    after_end: EventEnvelope | None  # what a read after the end gave (None: StopAsyncIteration, as it must)


async def read(reader: Reader, answer: Answer, pace: float = 0.0) -> Outcome:
    """Read the stream `answer` makes to its end (`pace`: seconds the reader spends on each segment)."""
    Slot.answer = answer
    request = EventEnvelope(ROUTE, {"fuzz": True}, cid=CID)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stream = PostOffice(reader.platform).stream(request, timeout=IDLE, endpoint=reader.endpoint)
    segments = []
    async for segment in stream:  # anything raised here fails the test
        segments.append(segment)
        assert len(segments) < 10_000, "the reader does not stop"
        if pace:
            await asyncio.sleep(pace)
    seconds = loop.time() - started
    after_end: EventEnvelope | None = None
    with contextlib.suppress(StopAsyncIteration):
        after_end = await stream.__anext__()
    # the reader closed the connection: the server's handler ends (a hanging one is cancelled)
    if Slot.running:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(Slot.idle.wait(), 2.0)
    assert not Slot.running, "the server's handler still runs: the reader did not close the connection"
    return Outcome(segments, seconds, after_end)


def reader_made(segment: EventEnvelope, endpoint: str) -> bool:
    """An EXCEPTION the reader made itself (not one that came in a frame)."""
    message = error_message(segment)
    return message in (MALFORMED, MISSING_HEAD) or message.startswith(f"Route {ROUTE} at {endpoint}: ")


def check_ending(outcome: Outcome, answer: Answer, endpoint: str) -> EventEnvelope:
    """The invariants of every input; returns the terminal."""
    segments = outcome.segments
    assert outcome.after_end is None, f"a segment after the end: {describe(outcome.after_end)}"
    assert segments, "the stream ended without a terminal"
    markers = [stream_signal(s) for s in segments]
    terminals = [i for i, m in enumerate(markers) if m in (EOF, EXCEPTION)]
    assert terminals == [len(segments) - 1], f"terminals at {terminals} of {len(segments)}: {markers}"
    for segment in segments:
        assert segment.cid == CID, f"cid {segment.cid!r}"
        assert segment.to is None and segment.reply_to is None
    last = segments[-1]
    if stream_signal(last) == EXCEPTION and reader_made(last, endpoint):
        assert last.status in READER_STATUSES, f"a reader-made exception with status {last.status}"
    allowance = IDLE + MARGIN + len(answer.chunks()) * (answer.pause + 0.002)
    assert outcome.seconds < allowance, f"{outcome.seconds:.2f} s to read (allowed {allowance:.2f} s)"
    return last


def check_errors(errors: Errors) -> None:
    logged = [entry for entry in errors.take() if not entry.startswith("aiohttp")]
    assert not logged, "errors logged:\n" + "\n".join(logged)


# -- arbitrary bytes and pieces of the dialect -----------------------------------------------------------


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def envelope_frame(event: EventEnvelope) -> bytes:
    """An envelope frame, rendered here (not with meshkit's own renderer)."""
    return b"event: envelope\ndata: " + b64(encode(event)) + b"\n\n"


def raw_frame(name: str | None, text: str) -> bytes:
    head = f"event: {name}\n" if name is not None else ""
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


def marked(
    marker: str, body: Any = None, status: int = 200, headers: dict[str, str] | None = None
) -> EventEnvelope:
    return EventEnvelope(None, body, {X_EVENT_STREAM: marker, **(headers or {})}, status=status)


SAMPLE_FRAMES = [
    envelope_frame(marked(DATA, "head", headers={"content-type": "text/plain"})),
    envelope_frame(marked(DATA, {"k": [1, 2]})),
    envelope_frame(marked(EOF, {"meta": 1})),
    envelope_frame(marked(EOF)),
    envelope_frame(marked(EXCEPTION, {"type": "error", "status": 409, "message": "no"}, 409)),
    envelope_frame(EventEnvelope(None, "unmarked", status=201)),
    envelope_frame(marked("bogus", "unknown marker")),
    envelope_frame(marked("EOF")),
    raw_frame(None, "text"),
    raw_frame("token", "a\nb"),
    raw_frame("envelope", "not base64!"),
]
TOKENS = [
    *SAMPLE_FRAMES,
    b"event: envelope\n",
    b"event:envelope\n",
    b"event: \n",
    b"data: ",
    b"data:",
    b"data",
    b": ping\n\n",
    b"id: 1\n",
    b"retry: 5\n",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"=",
    b64(b"\x80"),  # an empty map: an envelope with nothing in it
    b64(b"\x81\xa6status\xcd\x01\xf4"),
    b"!!!!",
    b"x" * (LIMIT + 1),
]
arbitrary_bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS) | st.binary(max_size=16), max_size=30).map(b"".join),
)


# -- valid streams ---------------------------------------------------------------------------------------


@dataclass
class Frame:
    wire: bytes  # with LF line endings
    event: EventEnvelope | None = None  # an envelope frame's envelope
    text: str = ""  # a raw frame's text
    name: str | None = None  # ... and its name


@dataclass
class Stream:
    frames: list[Frame]
    fillers: list[bytes]  # after each frame: comments, stray fields, blank lines (or nothing)
    bom: bool
    ending: bytes  # the line ending: LF, CRLF or CR

    def pieces(self) -> list[bytes]:
        """The body in pieces, one a frame and its filler, line endings converted."""
        out = []
        for index, (frame, filler) in enumerate(zip(self.frames, self.fillers, strict=True)):
            piece = (b"\xef\xbb\xbf" if self.bom and index == 0 else b"") + frame.wire + filler
            out.append(piece.replace(b"\n", self.ending))
        return out

    def body(self) -> bytes:
        return b"".join(self.pieces())

    def dispatched(self) -> list[int]:
        """For each frame, the offset in the body just after the byte that completes it: its blank line's
        end (the CR of the last CRLF is enough)."""
        ends, start = [], 0
        for index, piece in enumerate(self.pieces()):
            bom = 3 if self.bom and index == 0 else 0
            frame = self.frames[index].wire.replace(b"\n", self.ending)
            ends.append(start + bom + len(frame) - (self.ending == b"\r\n"))
            start += len(piece)
        return ends


MARKER_KEYS = [X_EVENT_STREAM, "X-Event-Stream", "X-EVENT-STREAM"]  # matched case-insensitively
RESERVED = {X_EVENT_STREAM, X_EVENT_NAME}
FILLERS = [
    b"",
    b"",
    b"",
    b": ping\n\n",
    b":\n",
    b"id: 42\n",
    b"retry: 10\n",
    b"event: stray\n\n",
    b"\n",
    b"foo\n",
]
raw_texts = st.text(st.characters(exclude_characters="\r", exclude_categories=["Cs"]), max_size=40)
raw_names = st.none() | st.text(
    st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), min_size=1, max_size=12
).filter(lambda name: name != "envelope")


@st.composite
def envelope_of(draw: st.DrawFn, marker: str) -> EventEnvelope:
    """A random envelope, marked (the marker's key and value in any case), small enough for the limit."""
    event: EventEnvelope = draw(valid_envelopes())
    event.to = event.reply_to = None
    event.headers = {k: v for k, v in event.headers.items() if k.lower() not in RESERVED}
    value = draw(st.sampled_from([marker, marker.upper(), marker.title()]))
    event.headers[draw(st.sampled_from(MARKER_KEYS))] = value
    if marker == DATA and draw(st.booleans()):
        event.headers[X_EVENT_NAME] = draw(st.text(max_size=12))  # any name: an envelope frame keeps it
    if marker == EXCEPTION:
        status = draw(st.integers(400, 599))
        event.status, event.body = (
            status,
            {"type": "error", "status": status, "message": draw(st.text(max_size=20))},
        )
    try:
        frame = envelope_frame(event)
    except CodecError:  # a value the wire refuses: a plain body instead
        event.body = "plain"
        frame = envelope_frame(event)
    if len(frame) > LIMIT - 64:
        event.body = "smaller"
    return event


@st.composite
def valid_streams(draw: st.DrawFn) -> Stream:
    frames = []
    count = draw(st.integers(0, 8))
    if count:
        head = draw(envelope_of(DATA))
        frames.append(Frame(envelope_frame(head), head))
    for _ in range(count - 1 if count else 0):
        if draw(st.booleans()):
            text, name = draw(raw_texts), draw(raw_names)
            frames.append(Frame(raw_frame(name, text), text=text, name=name))
        else:
            event = draw(envelope_of(DATA))
            frames.append(Frame(envelope_frame(event), event))
    terminal = draw(envelope_of(draw(st.sampled_from([EOF, EXCEPTION]))))
    frames.append(Frame(envelope_frame(terminal), terminal))
    fillers = [draw(st.sampled_from(FILLERS)) for _ in frames]
    ending = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"]))
    return Stream(frames, fillers, draw(st.booleans()), ending)


@dataclass
class Corruption:
    kind: str  # none, truncate, flip, garbage, raw-first, huge
    at: int = 0  # a byte offset (truncate, flip) or a frame's index (garbage, huge)
    data: bytes = b""  # the flip's XOR mask, the garbage, the huge line


@st.composite
def corruptions(draw: st.DrawFn, stream: Stream) -> Corruption:
    size = len(stream.body())
    kind = draw(st.sampled_from(["none", "none", "truncate", "flip", "garbage", "raw-first", "huge"]))
    if kind == "truncate":
        return Corruption(kind, draw(st.integers(0, size - 1)))
    if kind == "flip":
        return Corruption(kind, draw(st.integers(0, size - 1)), bytes([draw(st.integers(1, 255))]))
    if kind == "garbage":
        envelopes = [i for i, frame in enumerate(stream.frames) if frame.event is not None]
        garbage = draw(
            st.one_of(
                st.binary(max_size=40).map(b64),  # good base64 of bad bytes
                st.text("ABCxyz019+/=", max_size=40).map(str.encode),  # bad padding, wrong lengths
                st.text(st.characters(max_codepoint=0x7F, exclude_characters="\r\n"), max_size=40).map(
                    str.encode
                ),
                st.sampled_from([b"", b"====", "é".encode(), b64(b"\xc1"), b64(b"\x91\xc0")]),
            )
        )
        return Corruption(kind, draw(st.sampled_from(envelopes)), garbage)
    if kind == "raw-first":
        return Corruption(kind, data=raw_frame(draw(raw_names), draw(raw_texts)))
    if kind == "huge":
        length = draw(st.integers(LIMIT + 1, LIMIT + 2000))
        line = draw(st.sampled_from([b"data: ", b": ", b"x", b"event: "])) + b"y" * length + b"\n"
        if draw(st.booleans()):  # or many short data lines whose total is over the limit
            line = b"data: " + b"z" * 60 + b"\n"
            line *= LIMIT // 60 + 2
        return Corruption(kind, draw(st.integers(0, len(stream.frames) - 1)), line)
    return Corruption("none")


def corrupt(stream: Stream, corruption: Corruption) -> tuple[bytes, int]:
    """The body as sent, and how many of the stream's frames come before the corruption, untouched."""
    pieces = stream.pieces()
    kind, at = corruption.kind, corruption.at
    if kind == "truncate" or kind == "flip":
        body = stream.body()
        intact = sum(1 for end in stream.dispatched() if end <= at)
        if kind == "truncate":
            return body[:at], intact
        flipped = bytearray(body)
        flipped[at] ^= corruption.data[0]
        return bytes(flipped), intact
    if kind == "garbage":
        frame = b"event: envelope\ndata: " + corruption.data + b"\n\n"
        pieces[at] = (frame + stream.fillers[at]).replace(b"\n", stream.ending)
        if stream.bom and at == 0:
            pieces[0] = b"\xef\xbb\xbf" + pieces[0]
        return b"".join(pieces), at
    if kind == "raw-first":
        return corruption.data + b"".join(pieces), 0
    if kind == "huge":
        return b"".join(pieces[:at]) + corruption.data + b"".join(pieces[at:]), at
    return b"".join(pieces), len(pieces)


def same(got: EventEnvelope, frame: Frame) -> None:
    """`got` is the segment `frame` carried."""
    if frame.event is None:
        headers = (
            {X_EVENT_STREAM: DATA} if frame.name is None else {X_EVENT_STREAM: DATA, X_EVENT_NAME: frame.name}
        )
        assert (got.status, got.headers, got.body) == (200, headers, frame.text), describe(got)
        return
    sent = frame.event
    assert (got.id, got.status, got.headers) == (sent.id, sent.status, sent.headers), describe(got)
    assert msgpack.packb(got.body) == msgpack.packb(sent.body), (
        f"{describe(got.body)} != {describe(sent.body)}"
    )
    assert (got.sender, got.trace_id, got.trace_path) == (sent.sender, sent.trace_id, sent.trace_path)


@st.composite
def deliveries(draw: st.DrawFn, body: bytes, then: st.SearchStrategy[str]) -> Answer:
    """How `body` is sent: its chunks, the pauses between them, and what follows it."""
    if len(body) <= 200 and draw(st.integers(0, 9)) == 0:
        cuts = list(range(1, len(body)))  # a byte at a time
    else:
        cuts = draw(st.lists(st.integers(0, len(body)), max_size=12))
    pause = draw(st.sampled_from([0.0, 0.0, 0.001, 0.003]))
    content_type = draw(st.sampled_from([TEXT_EVENT_STREAM, TEXT_EVENT_STREAM, *SSE_TYPES]))
    return Answer(body, cuts, pause if len(cuts) < 40 else 0.0, draw(then), content_type=content_type)


@st.composite
def valid_inputs(draw: st.DrawFn, then: st.SearchStrategy[str]) -> tuple[Stream, Corruption, Answer]:
    stream = draw(valid_streams())
    corruption = draw(corruptions(stream))
    body, _ = corrupt(stream, corruption)
    return stream, corruption, draw(deliveries(body, then))


def check_valid(
    outcome: Outcome, stream: Stream, corruption: Corruption, answer: Answer, endpoint: str
) -> None:
    last = check_ending(outcome, answer, endpoint)
    segments = outcome.segments
    _, intact = corrupt(stream, corruption)
    frames = stream.frames
    if corruption.kind == "none":
        assert len(segments) == len(frames), f"{len(segments)} segments for {len(frames)} frames"
        for got, frame in zip(segments, frames, strict=True):
            same(got, frame)
        return
    for got, frame in zip(segments[:-1], frames[:intact], strict=False):  # up to the corruption: unchanged
        same(got, frame)
    if corruption.kind in ("truncate", "huge", "raw-first"):
        if not (
            stream_signal(last) == EXCEPTION and reader_made(last, endpoint)
        ):  # a cut in what follows the terminal (its filler, the last CR of a CRLF)
            same(last, frames[-1])
        else:
            assert len(segments) - 1 <= intact, (
                f"{len(segments)} segments, {intact} frames before the corruption"
            )
            assert stream_signal(last) == EXCEPTION and reader_made(last, endpoint), describe(last)
        if corruption.kind == "truncate" and reader_made(last, endpoint):
            expected = {"end": {502}, "drop": {502, 503}}[answer.then]  # ended early; connection broken
            assert last.status in expected, f"{describe(last)} for a body cut short, then {answer.then}"
        if corruption.kind == "huge":
            assert last.status == 502, describe(last)
        if corruption.kind == "raw-first":
            assert len(segments) == 1 and error_message(last) == MISSING_HEAD, describe(segments)


# -- the fuzz targets ---------------------------------------------------------------------------------------


def test_the_reader_survives_any_body(reader: Reader) -> None:
    @fuzz_settings()
    @given(arbitrary_bodies.flatmap(lambda body: deliveries(body, st.sampled_from(["end", "drop"]))))
    @example(Answer(b"", then="end"))
    @example(Answer(SAMPLE_FRAMES[0] + SAMPLE_FRAMES[5] + SAMPLE_FRAMES[6] + SAMPLE_FRAMES[2]))
    @example(Answer(b"x" * (LIMIT + 1)))
    def one_input(answer: Answer) -> None:
        tally("7 HttpStream, any body")
        reader.errors.take()
        outcome = reader.runner.run(read(reader, answer))
        check_ending(outcome, answer, reader.endpoint)
        check_errors(reader.errors)

    one_input()


def test_the_reader_yields_a_valid_stream_unchanged_up_to_its_corruption(reader: Reader) -> None:
    @fuzz_settings()
    @given(valid_inputs(st.sampled_from(["end", "drop"])))
    def one_input(case: tuple[Stream, Corruption, Answer]) -> None:
        tally("7 HttpStream, valid streams")
        stream, corruption, answer = case
        reader.errors.take()
        outcome = reader.runner.run(read(reader, answer))
        check_valid(outcome, stream, corruption, answer, reader.endpoint)
        check_errors(reader.errors)

    one_input()


def test_a_hanging_server_costs_the_idle_allowance_and_no_more(reader: Reader) -> None:
    @fuzz_settings(HANG_SHARE, minimum=6)
    @given(
        st.one_of(
            valid_inputs(st.just("hang")).map(lambda case: case[2]),
            arbitrary_bodies.flatmap(lambda body: deliveries(body, st.just("hang"))),
        )
    )
    @example(Answer(SAMPLE_FRAMES[0], then="hang"))
    @example(Answer(b"", then="hang"))
    def one_input(answer: Answer) -> None:
        tally("7 HttpStream, hanging server")
        reader.errors.take()
        outcome = reader.runner.run(read(reader, answer))
        last = check_ending(outcome, answer, reader.endpoint)
        if reader_made(last, reader.endpoint) and last.status == 408:
            assert outcome.seconds >= IDLE * 0.95, f"a 408 after {outcome.seconds:.2f} s"
        check_errors(reader.errors)

    one_input()


# -- plain cases ---------------------------------------------------------------------------------------------


def test_an_answer_that_is_neither_sse_nor_an_envelope_is_one_502(reader: Reader) -> None:
    for answer in [
        Answer(b"<html>hello</html>", content_type="text/html"),
        Answer(b"", content_type="application/octet-stream"),
        Answer(b"\xc1 not msgpack", status=500, content_type="application/octet-stream"),
        Answer(
            b'{"type": "error", "status": 500, "message": "x"}', status=502, content_type="application/json"
        ),
    ]:
        outcome = reader.runner.run(read(reader, answer))
        [segment] = outcome.segments
        assert (stream_signal(segment), segment.status) == (EXCEPTION, 502), f"{answer}: {describe(segment)}"
        assert reader_made(segment, reader.endpoint)
        assert outcome.seconds < IDLE


def test_an_http_500_with_an_envelope_is_that_envelope(reader: Reader) -> None:
    sent = EventEnvelope(None, "the handler failed", status=500, cid=CID)
    outcome = reader.runner.run(
        read(reader, Answer(encode(sent), status=500, content_type="application/octet-stream"))
    )

    [reply] = outcome.segments
    assert (reply.id, reply.status, reply.body, stream_signal(reply)) == (
        sent.id,
        500,
        "the handler failed",
        None,
    )

    refused = EventEnvelope(None, "Route fuzz.stream not found", status=404)
    outcome = reader.runner.run(
        read(reader, Answer(encode(refused), status=404, content_type="application/octet-stream"))
    )
    [reply] = outcome.segments
    assert (reply.id, reply.status, reply.body) == (refused.id, 404, "Route fuzz.stream not found")


def test_an_unmarked_envelope_frame_after_the_head_ends_the_stream_with_its_status(reader: Reader) -> None:
    """streams.md, Segments: an envelope with no marker "after a segment ... is a failure: the reader ends
    the stream in-band with that envelope's status" (the bus's reader, LocalStream, does)."""
    head = envelope_frame(marked(DATA, "head"))
    unmarked = envelope_frame(EventEnvelope(None, "the producer crashed", status=500))
    after = raw_frame(None, "after") + envelope_frame(marked(EOF))
    outcome = reader.runner.run(read(reader, Answer(head + unmarked + after)))

    got = [(stream_signal(s), s.status, s.body) for s in outcome.segments]
    assert len(got) == 2 and got[0] == (DATA, 200, "head"), got
    assert got[1][:2] == (EXCEPTION, 500), got


def test_what_arrived_before_the_connection_dropped_is_read_even_by_a_slow_reader(reader: Reader) -> None:
    """The peer sent every frame, its EOF included, then dropped the connection (it died before it ended the
    response): a reader that spends 20 ms on each segment must still get all of them, as a quick one does."""
    frames = [envelope_frame(marked(DATA, "head"))]
    frames += [raw_frame(None, f"segment {index}") for index in range(20)]
    frames.append(envelope_frame(marked(EOF, {"segments": 21})))
    cuts = list(itertools.accumulate(len(frame) for frame in frames))
    answer = Answer(b"".join(frames), cuts, pause=0.002, then="drop")

    quick = reader.runner.run(read(reader, answer))
    slow = reader.runner.run(read(reader, answer, pace=0.02))

    expected = ["head", *(f"segment {index}" for index in range(20)), {"segments": 21}]
    assert [s.body for s in quick.segments] == expected
    got = [
        s.body if stream_signal(s) != EXCEPTION else f"{s.status} {error_message(s)}" for s in slow.segments
    ]
    assert got == expected, f"{len(got)} segments: ...{got[-3:]}"


# -- a server process killed mid-stream ---------------------------------------------------------------------

PEER_SCRIPT = r"""
import asyncio, base64
import msgpack
from aiohttp import web

def frame(envelope):
    return b"event: envelope\ndata: " + base64.b64encode(msgpack.packb(envelope)) + b"\n\n"

async def handle(request):
    await request.read()
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    head = {"id": "head", "headers": {"x-event-stream": "data"}, "body": "head", "status": 200}
    await response.write(frame(head))
    for index in range(3):
        await response.write(f"data: {index}\n\n".encode())
    await asyncio.Event().wait()  # until killed
    return response

async def main():
    app = web.Application()
    app.router.add_post("/api/event", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def peer_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", PEER_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip().isdigit(), f"the peer said {line!r}"
        yield process, int(line)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_a_peer_killed_mid_stream_ends_the_stream_in_band_at_once(reader: Reader) -> None:
    idle = 10.0  # the end must come from the broken connection, long before the idle allowance

    async def read_until_killed(
        process: subprocess.Popen[str], port: int
    ) -> tuple[list[EventEnvelope], float]:
        request = EventEnvelope(ROUTE, None, cid=CID)
        stream = PostOffice(reader.platform).stream(
            request, timeout=idle, endpoint=f"http://{HOST}:{port}/api/event"
        )
        segments = [await stream.__anext__() for _ in range(4)]
        os.kill(process.pid, signal.SIGKILL)
        started = time.monotonic()
        segments += [segment async for segment in stream]
        return segments, time.monotonic() - started

    with peer_process() as (process, port):
        segments, seconds = reader.runner.run(read_until_killed(process, port))

    assert [(stream_signal(s), s.body) for s in segments[:4]] == [
        (DATA, "head"),
        (DATA, "0"),
        (DATA, "1"),
        (DATA, "2"),
    ]
    last = segments[-1]
    assert len(segments) == 5, [describe(s) for s in segments]
    assert (stream_signal(last), last.status in (502, 503)) == (EXCEPTION, True), describe(last)
    assert reader_made(last, f"http://{HOST}:{port}/api/event")
    assert seconds < 2.0, f"{seconds:.2f} s after the peer was killed"


@pytest.fixture(autouse=True)
def _settled(reader: Reader) -> Iterator[None]:
    yield
    check_errors(reader.errors)
