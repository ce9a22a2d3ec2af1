"""Target 6, the SSE dialect of a stream (meshkit/http/_sse.py): what a peer's event stream may hold.

- ``SseParser.feed``: any bytes, in any chunks, give events or an SseError (past the limit), nothing else;
  how the bytes are cut into chunks changes neither the events nor whether the limit is hit.
- ``decode_frame``: any (name, text) gives an envelope and a terminal flag, never an exception.
- A segment rendered with ``data_frame`` comes back from the parser and ``decode_frame`` as it was sent.
"""

from __future__ import annotations

import base64
import itertools

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import CodecError, EventEnvelope, encode
from meshkit.core import DATA, EOF, EXCEPTION, X_EVENT_NAME, X_EVENT_STREAM, stream_signal
from meshkit.http._sse import SseError, SseParser, data_frame, decode_frame, envelope_frame
from tests.fuzz import describe, fuzz_settings, fuzz_timeout, tally, text, valid_envelopes, wire_bytes

pytestmark = pytest.mark.timeout(fuzz_timeout(0.05))

Event = tuple[str | None, str]

# the pieces an event stream is made of, to be put together in any order (garbage bytes among them)
TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"event:",
    b"event: envelope",
    b"event: tokens",
    b"id: 1",
    b"retry: 5",
    b":",
    b": ping",
    b" ",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xe2\x82",
    "é🙂".encode(),
]
pieces = st.sampled_from(TOKENS) | st.binary(max_size=12)
# well-formed lines too (a field, a value, an ending), so that events span lines and line endings mix
fields = st.sampled_from([b"data:", b"data: ", b"data", b"event: ", b"event:", b": ", b"id: ", b""])
values = st.sampled_from([b"", b"x", b" y", b"\xff", b"envelope", "é".encode()]) | st.binary(max_size=6)
endings = st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r"])
lines = st.tuples(fields, values, endings).map(b"".join)
streams = st.one_of(
    st.lists(lines, max_size=20).map(b"".join),
    st.lists(lines | pieces, max_size=30).map(b"".join),
    st.binary(max_size=200),
)
limits = st.integers(1, 64) | st.just(1 << 20)


def feed_all(chunks: list[bytes], limit: int) -> list[Event] | None:
    """The events of the stream cut into `chunks`, or None when it went past the limit."""
    parser = SseParser(limit)
    events: list[Event] = []
    try:
        for chunk in chunks:
            events.extend(parser.feed(chunk))
    except SseError:
        return None
    return events


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(streams)
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    if draw(st.booleans()):  # chunks that end in CR: a LF that starts the next one ends no line
        cuts += [i + 1 for i, byte in enumerate(data) if byte == 0x0D]
    cuts.sort()
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@fuzz_settings()
@given(chunkings(), limits)
def test_chunking_changes_nothing(stream: tuple[bytes, list[bytes]], limit: int) -> None:
    tally("6 SseParser.feed")
    data, chunks = stream
    whole = feed_all([data], limit)  # anything but SseError raised here fails the test
    assert feed_all(chunks, limit) == whole, f"chunks {describe(chunks)} (limit {limit})"
    assert feed_all([data[i : i + 1] for i in range(len(data))], limit) == whole, describe(data)
    for name, value in whole or []:
        assert name is None or name != ""
        assert isinstance(value, str)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


names = st.none() | st.sampled_from(["envelope", "", "tokens", "error"]) | text
frame_texts = st.one_of(
    text,
    st.text(max_size=80),
    wire_bytes().map(_b64),  # garbage, broken and good envelopes
    st.binary(max_size=40).map(_b64),
    wire_bytes().map(lambda data: _b64(data)[:-1] + "\n"),
)


@fuzz_settings()
@given(names, frame_texts, st.booleans(), st.none() | text)
def test_decode_frame_never_raises(name: str | None, data: str, head_seen: bool, cid: str | None) -> None:
    tally("6 decode_frame")
    event, terminal = decode_frame(name, data, head_seen, cid)
    assert isinstance(event, EventEnvelope)
    assert event.to is None and event.reply_to is None
    assert terminal is (stream_signal(event) in (EOF, EXCEPTION))
    if cid is not None:
        assert event.cid == cid


@fuzz_settings()
@given(valid_envelopes(), st.none() | text | st.just("envelope"), st.booleans(), st.none() | st.text())
def test_a_segment_comes_back_as_sent(
    event: EventEnvelope, name: str | None, first: bool, plain: str | None
) -> None:
    tally("6 data_frame round trip")
    if plain is not None:  # what a raw frame may carry, more often than valid_envelopes would make it
        event.status, event.headers, event.body = 200, {}, plain or None
    event.headers[X_EVENT_STREAM] = DATA
    if name is not None:
        event.headers[X_EVENT_NAME] = name
    try:
        frames = envelope_frame(EventEnvelope(None, "head")) + data_frame(event, first)
    except CodecError:
        return  # a body the wire refuses (a lone surrogate), in the codec's words
    parsed = SseParser(len(frames)).feed(frames)
    decoded = [decode_frame(n, t, i > 0, None) for i, (n, t) in enumerate(parsed)]
    assert not any(terminal for _, terminal in decoded)
    if len(decoded) == 1:  # a raw segment with no body: nothing on the wire
        assert event.body is None and not first
        return
    [_, (got, _)] = decoded
    sent = {k: v for k, v in event.headers.items() if k != "x-ttl"}  # x-ttl is the head's, lost on a raw one
    assert {k: v for k, v in got.headers.items() if k != "x-ttl"} == sent
    same = msgpack.packb([got.body, got.status]) == msgpack.packb([event.body, event.status])  # NaN too
    assert same, f"{describe(event)} came back as {describe(got)}"
    assert encode(got) is not None
