"""The SSE dialect of a stream over Event over HTTP (meshkit/http/_sse.py): frames, the parser, decode_frame,
the plain frames for browsers, and the same frames read and written by mercury-composable."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest

from meshkit.core import (
    DATA,
    EOF,
    EXCEPTION,
    X_EVENT_NAME,
    X_EVENT_STREAM,
    CodecError,
    EventEnvelope,
    encode,
    exception_segment,
)
from meshkit.http._sse import (
    MALFORMED,
    MISSING_HEAD,
    PING,
    SseError,
    SseParser,
    data_frame,
    decode_frame,
    envelope_frame,
    raw_streamable,
    sse_frame,
    text_frame,
)

# Importing mercury-composable configures logging for the whole process (see test_mercury_interop.py): put
# the root logger back as it was, so the other tests of the session run as they would without it.
_root_logger = logging.getLogger()
_root_handlers, _root_level = list(_root_logger.handlers), _root_logger.level
from mercury_composable import client as mercury_client  # noqa: E402
from mercury_composable import event_stream as mercury_stream  # noqa: E402
from mercury_composable.envelope import EventEnvelope as MercuryEnvelope  # noqa: E402

_root_logger.handlers[:] = _root_handlers
_root_logger.setLevel(_root_level)

LIMIT = 1 << 20
Event = tuple[str | None, str]


def segment(
    body: Any, name: str | None = None, status: int = 200, more: dict[str, str] | None = None, **headers: str
) -> EventEnvelope:
    marked = {X_EVENT_STREAM: DATA, **headers, **(more or {})}
    if name is not None:
        marked[X_EVENT_NAME] = name
    return EventEnvelope("caller.inbox", body, marked, status=status, reply_to="somewhere", cid="c-1")


def head() -> EventEnvelope:
    return EventEnvelope(None, "head", {X_EVENT_STREAM: DATA, "content-type": "text/event-stream"})


def parse(data: bytes, limit: int = LIMIT) -> list[Event]:
    return SseParser(limit).feed(data)


def parse_chunks(chunks: Iterable[bytes], limit: int = LIMIT) -> list[Event]:
    parser = SseParser(limit)
    return [event for chunk in chunks for event in parser.feed(chunk)]


def relay(frames: bytes, cid: str | None = None) -> list[tuple[EventEnvelope, bool]]:
    """What a consumer makes of `frames`: each parsed frame decoded, the head seen after the first one."""
    decoded: list[tuple[EventEnvelope, bool]] = []
    for name, text in parse(frames):
        decoded.append(decode_frame(name, text, bool(decoded), cid))
    return decoded


def render(events: list[EventEnvelope]) -> bytes:
    return b"".join(data_frame(event, first=i == 0) for i, event in enumerate(events))


def same_segment(got: EventEnvelope, sent: EventEnvelope) -> None:
    assert got.body == sent.body
    assert got.status == sent.status
    assert got.headers == sent.headers
    assert got.to is None and got.reply_to is None


# -- frames ----------------------------------------------------------------------------------------------


def test_sse_frame_bytes() -> None:
    assert sse_frame(None, "hi") == b"data: hi\n\n"
    assert sse_frame("tokens", "a\nb") == b"event: tokens\ndata: a\ndata: b\n\n"
    assert sse_frame(None, "") == b"data: \n\n"
    assert sse_frame("", "x") == b"data: x\n\n"
    assert parse(sse_frame("n", " spaced\n\n")) == [("n", " spaced\n\n")]


def test_ping_is_a_comment() -> None:
    assert PING == b": ping\n\n"
    assert parse(PING + sse_frame(None, "x") + PING) == [(None, "x")]


def test_envelope_frame_clears_addressing_on_a_copy() -> None:
    event = segment({"k": [1, 2]})
    frame = envelope_frame(event)
    assert event.to == "caller.inbox" and event.reply_to == "somewhere"
    assert frame.startswith(b"event: envelope\ndata: ") and frame.endswith(b"\n\n")
    [(name, text)] = parse(frame)
    got, terminal = decode_frame(name, text, False, None)
    assert not terminal
    assert got.id == event.id and got.cid == "c-1"
    same_segment(got, event)


@pytest.mark.parametrize(
    "sent",
    [
        segment("plain text"),
        segment("line one\nline two\n"),
        segment(""),
        segment("tokens", name="delta"),
        segment(b"\x00\xffbytes"),
        segment({"answer": 42, "items": [1, "two", None]}),
        segment("not found", status=404),
        segment("x" * 200_000),
        segment("with a header", lang="en"),
        segment("carriage\r\nreturn"),
        segment("named envelope", name="envelope"),
        segment("empty name", name=""),
        segment("a line\nbreak in the name", name="a\nb"),
        segment(None, name="meta", lang="en"),
    ],
    ids=lambda event: repr(event.body)[:20] + repr(event.headers)[:40],
)
def test_segments_round_trip(sent: EventEnvelope) -> None:
    got = relay(render([head(), sent]))
    assert len(got) == 2 and not got[0][1] and not got[1][1]
    same_segment(got[1][0], sent)


@pytest.mark.parametrize(
    ("sent", "raw"),
    [
        (segment("text"), True),
        (segment("text", name="tokens"), True),
        (segment("text", more={"x-ttl": "5"}), True),
        (segment(None), True),
        (segment("text", status=201), False),
        (segment("text", lang="en"), False),
        (segment("text", more={"X-Event-Name": "n"}), False),  # a raw frame would give back a lowercase name
        (segment(b"bytes"), False),
        (segment({"k": 1}), False),
        (segment(1), False),
        (segment("cr\r"), False),
        (segment("x", name="envelope"), False),
        (segment("x", name=""), False),
        (segment("x", name="a\rb"), False),
        (EventEnvelope(None, "text", {X_EVENT_STREAM: "DATA"}), False),
        (EventEnvelope(None, None, {X_EVENT_STREAM: EOF}), False),
        (EventEnvelope(None, "unmarked"), False),
    ],
)
def test_raw_streamable(sent: EventEnvelope, raw: bool) -> None:
    assert raw_streamable(sent) is raw
    frame = data_frame(sent, first=False)
    assert frame.startswith(b"event: envelope\n") is not raw
    assert data_frame(sent, first=True) == envelope_frame(sent)


def test_the_head_is_always_an_envelope_frame() -> None:
    first = segment("raw-able text")
    assert raw_streamable(first)
    assert data_frame(first, first=True).startswith(b"event: envelope\ndata: ")
    assert data_frame(first, first=False) == b"data: raw-able text\n\n"


def test_a_none_body_raw_segment_renders_as_nothing() -> None:
    assert data_frame(segment(None), first=False) == b""
    assert relay(render([head(), segment(None), segment("after")]))[1][0].body == "after"


def test_a_whole_stream_with_terminals() -> None:
    eof = EventEnvelope(None, {"usage": 3}, {X_EVENT_STREAM: EOF})
    sent = [head(), segment("a"), segment({"b": 1}), segment("c", name="n"), eof]
    frames = render(sent[:-1]) + envelope_frame(eof)
    got = relay(frames, cid="mine")
    assert [g.body for g, _ in got] == ["head", "a", {"b": 1}, "c", {"usage": 3}]
    assert [terminal for _, terminal in got] == [False, False, False, False, True]
    assert all(g.cid == "mine" for g, _ in got)
    failed = EventEnvelope(None, {"message": "boom"}, {X_EVENT_STREAM: EXCEPTION}, status=503)
    assert decode_frame(*parse(envelope_frame(failed))[0], True, None)[1]


def test_an_unencodable_raw_body_is_refused_by_the_codec() -> None:
    with pytest.raises(CodecError):
        data_frame(segment("lone \ud800 surrogate"), first=False)


# -- the parser ------------------------------------------------------------------------------------------

SAMPLE = (
    b"\xef\xbb\xbf: a comment\r\n"
    b"event: first\r\ndata: one\r\ndata:two\r\n\r\n"
    b"data:  two spaces\rid: 7\rretry: 10\rfoo: bar\r\r"
    b"event: named\ndata\ndata: \xff\xfe\n\n"
    b"event: lost\n\n"
    b'data: {"caf\xc3\xa9": 1}\n\n'
    b"event: unterminated\ndata: dropped\n"
)
SAMPLE_EVENTS = [
    ("first", "one\ntwo"),
    (None, " two spaces"),
    ("named", "\n\ufffd\ufffd"),
    (None, '{"café": 1}'),
]


def test_the_sample_stream() -> None:
    assert parse(SAMPLE) == SAMPLE_EVENTS


def test_every_split_gives_the_same_events() -> None:
    for cut in range(len(SAMPLE) + 1):
        assert parse_chunks([SAMPLE[:cut], SAMPLE[cut:]]) == SAMPLE_EVENTS, cut
    for first in range(0, len(SAMPLE), 7):
        for second in range(first, len(SAMPLE), 5):
            chunks = [SAMPLE[:first], SAMPLE[first:second], SAMPLE[second:]]
            assert parse_chunks(chunks) == SAMPLE_EVENTS
    assert parse_chunks(SAMPLE[i : i + 1] for i in range(len(SAMPLE))) == SAMPLE_EVENTS


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_endings(ending: bytes) -> None:
    stream = ending.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert parse(stream) == [("e", "a\nb"), (None, "c")]


def test_cr_then_lf_in_the_next_chunk_is_one_line_end() -> None:
    assert parse_chunks([b"data: a\r", b"\ndata: b\r", b"", b"\n\r", b"\n"]) == [(None, "a\nb")]
    assert parse_chunks([b"data: a\r", b"\r"]) == [(None, "a")]


def test_fields() -> None:
    assert parse(b"data\n\n") == [(None, "")]
    assert parse(b"data:\n\n") == [(None, "")]
    assert parse(b"data:x\ndata: y\ndata:  z\n\n") == [(None, "x\ny\n z")]
    assert parse(b"event\ndata: x\n\n") == [(None, "x")]
    assert parse(b"Data: x\nDATA: y\n\n") == []
    assert parse(b"data : x\n\n") == []
    assert parse(b"event: a: b\ndata: c:d\n\n") == [("a: b", "c:d")]
    assert parse(b": only a comment\n\n:\n\n") == []
    assert parse(b"id: 1\nretry: 5\nwhat: ever\n\n") == []


def test_the_event_name_resets_after_each_blank_line() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == [("a", "1"), (None, "2")]
    assert parse(b"event: a\n\ndata: 2\n\n") == [(None, "2")]
    assert parse(b"event: a\nevent: b\ndata: 2\n\n") == [("b", "2")]


def test_a_bom_is_dropped_only_at_the_start() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [(None, "x")]
    assert parse(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [(None, "x")]


def test_an_unterminated_event_is_dropped() -> None:
    parser = SseParser(LIMIT)
    assert parser.feed(b"data: complete\n\ndata: never ended\n") == [(None, "complete")]
    assert parser.feed(b"data: still open") == []


def test_limits() -> None:
    assert parse(b"data: " + b"x" * 10 + b"\n\n", limit=16) == [(None, "x" * 10)]
    with pytest.raises(SseError):
        parse(b"data: " + b"x" * 11 + b"\n\n", limit=16)  # a whole line over the limit
    with pytest.raises(SseError):
        parse(b": " + b"x" * 20 + b"\n", limit=16)  # comments count too
    parser = SseParser(16)
    parser.feed(b"data: " + b"x" * 10)
    with pytest.raises(SseError):
        parser.feed(b"x")  # a line not yet ended
    with pytest.raises(SseError):
        parser.feed(b"\n\n")  # and the parser stays failed
    assert parse(b"data: 1234567\ndata: 12345678\n\n", limit=16) == [(None, "1234567\n12345678")]
    with pytest.raises(SseError):
        parse(b"data: 1234567\ndata: 123456789\n\n", limit=16)  # the data of one event
    many = SseParser(16)
    for _ in range(100):  # the limit is per event
        assert many.feed(b"data: 0123456789\n\n") == [(None, "0123456789")]


def test_ten_megabytes_in_one_chunk_and_in_one_byte_chunks() -> None:
    big = b"data: " + b"y" * 10_000_000 + b"\n\n"
    assert parse(big, limit=11_000_000) == [(None, "y" * 10_000_000)]
    framed = b"".join(sse_frame(None, f"{i:099d}") for i in range(100_000))  # 10.8 MB of small events
    assert len(parse(framed)) == 100_000
    parser = SseParser(11_000_000)
    feed = parser.feed
    started = time.perf_counter()
    for i in range(len(big) - 2):
        assert not feed(big[i : i + 1])
    assert feed(b"\n") == [] and feed(b"\n") == [(None, "y" * 10_000_000)]
    assert time.perf_counter() - started < 60  # linear: a quadratic parser would take hours


# -- decode_frame ----------------------------------------------------------------------------------------


def exception_of(result: tuple[EventEnvelope, bool], message: str, cid: str | None) -> None:
    event, terminal = result
    assert terminal
    assert event.headers == {X_EVENT_STREAM: EXCEPTION}
    assert event.status == 500
    assert event.body == {"type": "error", "status": 500, "message": message}
    assert event.cid == cid


def test_a_raw_frame_after_the_head_is_a_data_segment() -> None:
    event, terminal = decode_frame("tokens", "abc", True, "c-9")
    assert not terminal
    assert (event.body, event.headers, event.cid, event.status) == (
        "abc",
        {X_EVENT_STREAM: DATA, X_EVENT_NAME: "tokens"},
        "c-9",
        200,
    )
    assert decode_frame(None, "x", True, None)[0].headers == {X_EVENT_STREAM: DATA}
    assert decode_frame("", "x", True, None)[0].headers == {X_EVENT_STREAM: DATA}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (None, "raw first", MISSING_HEAD),
        ("tokens", "named raw first", MISSING_HEAD),
        ("envelope", "not base64!", MALFORMED),
        (
            "envelope",
            base64.b64encode(encode(head())).decode() + "\n",
            MALFORMED,
        ),  # whitespace: validate=True
        ("envelope", "é" * 8, MALFORMED),
        ("envelope", "", MALFORMED),
        ("envelope", base64.b64encode(b"\xc1\xc1\xc1 garbage").decode(), MALFORMED),
        ("envelope", base64.b64encode(msgpack.packb([1, 2, 3])).decode(), MALFORMED),
        ("envelope", base64.b64encode(msgpack.packb({"status": "high"})).decode(), MALFORMED),
        ("envelope", base64.b64encode(encode(segment("x" * 100))[:-10]).decode(), MALFORMED),
    ],
)
def test_decode_frame_guards(
    name: str | None, text: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="meshkit.http.sse"):
        exception_of(decode_frame(name, text, False, "c-2"), message, "c-2")
        if name == "envelope":
            exception_of(decode_frame(name, text, True, None), message, None)
    records = [r for r in caplog.records if r.name == "meshkit.http.sse"]
    assert len(records) == (2 if name == "envelope" else 1)
    assert all(r.levelno == logging.WARNING and message in r.getMessage() for r in records)


# -- plain frames for browsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        (segment("hello"), b"data: hello\n\n"),
        (segment("a\r\nb\rc\nd"), b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        (segment("t", name="tokens"), b"event: tokens\ndata: t\n\n"),
        (segment("t", name="two\nlines"), b"event: two lines\ndata: t\n\n"),
        (segment(b"caf\xc3\xa9 \xff"), "data: café \ufffd\n\n".encode()),
        (segment(None, name="x"), b""),
        (segment({"n": 1, "b": b"hi", "t": (1, 2)}), b'data: {"n":1,"b":"hi","t":[1,2]}\n\n'),
        (segment(7), b"data: 7\n\n"),
        (segment("lone \ud800"), b"data: lone ?\n\n"),
        (EventEnvelope(None, None, {X_EVENT_STREAM: EOF}), b""),
        (EventEnvelope(None, {"usage": 2}, {X_EVENT_STREAM: EOF}), b'event: eof\ndata: {"usage":2}\n\n'),
        (EventEnvelope(None, "bye", {X_EVENT_STREAM: EOF}), b'event: eof\ndata: "bye"\n\n'),
        (
            exception_segment(503, "down"),
            b'event: error\ndata: {"type":"error","status":503,"message":"down"}\n\n',
        ),
        (
            EventEnvelope(None, "gone", {X_EVENT_STREAM: EXCEPTION}, status=410),
            b'event: error\ndata: {"type":"error","status":410,"message":"gone"}\n\n',
        ),
        (EventEnvelope(None, {"one": "reply"}), b'data: {"one":"reply"}\n\n'),
        (EventEnvelope(None, None), b""),
        (
            EventEnvelope(None, "not here", status=404),
            b'event: error\ndata: {"type":"error","status":404,"message":"not here"}\n\n',
        ),
        (EventEnvelope(None, "x", {X_EVENT_STREAM: "bogus"}), b""),
    ],
)
def test_text_frame(event: EventEnvelope, frame: bytes) -> None:
    assert text_frame(event) == frame
    if frame:
        [(name, text)] = parse(frame)
        if name in ("error", "eof") and text.startswith("{"):
            assert json.loads(text)


def test_text_frame_refuses_what_is_not_plain_data() -> None:
    with pytest.raises(CodecError):
        text_frame(segment(object()))
    with pytest.raises(CodecError):
        text_frame(segment({b"bytes key": 1}))


# -- mercury-composable on the other side ----------------------------------------------------------------


def mercury_relay(frames: bytes, cid: str | None = None) -> list[tuple[Any, bool]]:
    decoded: list[tuple[Any, bool]] = []
    for name, text in mercury_stream.SseParser().feed(frames):
        event, terminal = mercury_client._decode_frame(name, text, bool(decoded), cid)
        decoded.append((event, terminal))
    return decoded


def test_meshkit_frames_read_by_mercury() -> None:
    eof = EventEnvelope(None, {"usage": 1}, {X_EVENT_STREAM: EOF})
    sent = [
        head(),
        segment("text"),
        segment("multi\nline"),
        segment("t", name="tokens"),
        segment(b"\x00\x01"),
        segment({"k": [1, 2]}),
        segment("cr\r\n"),
        segment("teapot", status=418),
        segment("x" * 200_000),
        segment("h", lang="en"),
    ]
    frames = render(sent) + envelope_frame(eof)
    ours, theirs = relay(frames, cid="cid-1"), mercury_relay(frames, cid="cid-1")
    assert len(theirs) == len(ours) == len(sent) + 1
    for (mine, my_end), (other, other_end), original in zip(ours, theirs, [*sent, eof], strict=True):
        assert other.body == mine.body == original.body
        assert (other.status or 200) == mine.status == original.status
        assert other.headers == mine.headers == original.headers
        assert other.cid == mine.cid == "cid-1"
        assert other_end is my_end
    assert theirs[-1][1] and mercury_stream.stream_signal(theirs[-1][0]) == EOF


def mercury_segment(body: Any, name: str | None = None, marker: str = DATA) -> MercuryEnvelope:
    event = MercuryEnvelope("caller.inbox", body).set_header(X_EVENT_STREAM, marker).set_reply_to("x")
    return event.set_header(X_EVENT_NAME, name) if name else event


def test_mercury_frames_read_by_meshkit() -> None:
    first = mercury_segment("head").set_status(201).set_header("content-type", "text/event-stream")
    sent = [
        mercury_segment("text"),
        mercury_segment("multi\nline"),
        mercury_segment("t", name="tokens"),
        mercury_segment(b"\x00\x01"),
        mercury_segment({"k": [1, 2]}),
        mercury_segment("cr\r"),
        mercury_segment("teapot").set_status(418),
        mercury_segment("y" * 200_000),
    ]
    end = (
        mercury_segment(None, marker=EXCEPTION).set_status(500).set_body(mercury_stream.error_body(500, "no"))
    )
    frames = mercury_stream.envelope_frame(first)
    frames += b"".join(mercury_stream.data_frame(event, first_frame=False) for event in sent)
    frames += mercury_stream.envelope_frame(end)
    frames += mercury_stream.sse_frame(None, "after the terminal")
    got = relay(frames)
    assert [g.body for g, _ in got[:-1]] == ["head", *(m.body for m in sent), end.body]
    assert [g.status for g, _ in got[:-1]] == [201, 200, 200, 200, 200, 200, 200, 418, 200, 500]
    assert got[0][0].headers == {X_EVENT_STREAM: DATA, "content-type": "text/event-stream"}
    assert got[3][0].headers == {X_EVENT_STREAM: DATA, X_EVENT_NAME: "tokens"}
    assert [terminal for _, terminal in got] == [False] * 9 + [True, False]
    assert all(g.to is None and g.reply_to is None for g, _ in got)
