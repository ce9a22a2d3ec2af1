"""Large events: the envelope's head and body packed apart, cut into segments, and decoded from the pieces.

The bytes on the wire are still one MsgPack map (docs/protocol/envelope.md), so everything here is checked
against the plain `encode` / `decode` of the whole envelope.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit import AppError, CodecError, EventEnvelope, decode, encode
from meshkit.core import _codec as codec
from meshkit.core import decode_pieces, encode_split
from meshkit.mesh import VirtualTopic
from meshkit.mesh._frames import FrameError, Reassembler, parse, segment_records
from tests.fuzz import valid_envelopes, wire_bytes
from tests.support.transport_stubs import StubConnector, StubPlatform, stub_transport

ORIGIN = "20260101" + "b" * 32


def _event(body: Any, **fields: Any) -> EventEnvelope:
    return EventEnvelope("bench.echo", body, {"k": "v"}, id="e1", reply_to="@x", cid="c1", **fields)


def _wire(event: EventEnvelope) -> dict[str, Any]:
    return msgpack.unpackb(encode(event), strict_map_key=False)  # type: ignore[no-any-return]


def _same(a: EventEnvelope, b: EventEnvelope) -> None:
    # packed values (NaN equals NaN there), fields sorted (a decoded event sets them in wire order)
    assert [(k, msgpack.packb(v)) for k, v in sorted(_wire(a).items())] == [
        (k, msgpack.packb(v)) for k, v in sorted(_wire(b).items())
    ]


# -- the head and body of an envelope ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"x" * 70_000, bytearray(b"y" * 300), "t" * 40, "é" * 70_000, "ab"])
def test_head_and_body_together_are_the_envelope(body: bytes | bytearray | str) -> None:
    event = _event(body, status=201, exec_time=1.5)
    split = encode_split(event)
    assert split is not None
    head, data = split
    wire = msgpack.unpackb(head + bytes(data))
    assert list(wire)[-1] == "body"  # the body comes last, so it can be cut straight after the head
    assert wire == msgpack.unpackb(encode(event))
    _same(decode(head + bytes(data)), event)


def test_every_field_set_makes_a_map16_head() -> None:
    event = _event(
        b"z" * 10,
        status=500,
        sender="a.b",
        trace_id="t",
        trace_path="p",
        span_id="s",
        exec_time=1.0,
        round_trip=2.0,
        tags={"a": "b"},
        annotations={"n": 1},
        obj_type="o",
        exception="e",
    )
    head, data = encode_split(event) or (b"", b"")
    assert head[0] == 0xDE  # 17 entries: past a fixmap
    _same(decode(head + bytes(data)), event)


def test_other_bodies_are_not_split() -> None:
    assert encode_split(_event({"a": 1})) is None
    assert encode_split(_event(None)) is None


def test_a_str_body_that_is_not_utf8_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        encode_split(_event("\udc80" * 3))


# -- decoding from pieces is decoding the joined bytes -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(wire_bytes(), st.lists(st.integers(0, 400), max_size=4))
def test_decode_pieces_is_decode_of_the_joined_bytes(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    try:
        expected = decode(data)
    except CodecError:
        with pytest.raises(CodecError):
            decode_pieces(pieces)
        return
    got = decode_pieces(pieces)
    got.id = expected.id  # a map without an id gets a fresh one each time
    _same(got, expected)


@settings(max_examples=100, deadline=None)
@given(valid_envelopes(), st.binary(min_size=1, max_size=3000), st.integers(16, 700))
def test_segments_of_a_split_envelope_decode_to_it(event: EventEnvelope, body: bytes, size: int) -> None:
    event.body = body
    pieces = encode_split(event) or (b"",)
    frames = [parse(record) for record in segment_records(ORIGIN, pieces, size, "multiplex.0001-001")]
    assert all(len(f["payload"]) <= size for f in frames)
    assert b"".join(f["payload"] for f in frames) == b"".join(pieces)
    joiner = Reassembler(1 << 20)
    parts = [joiner.add_pieces(f) for f in reversed(frames)][-1]
    assert parts is not None and joiner.held_bytes == 0
    _same(decode_pieces(parts), event)


def test_the_body_is_joined_straight_from_the_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    body = os.urandom(200_000)
    event = _event(body)
    pieces = [f["payload"] for f in map(parse, segment_records(ORIGIN, encode_split(event) or (), 65536))]
    monkeypatch.setattr(codec, "decode", lambda data: pytest.fail("joined and decoded as a whole"))
    got = decode_pieces(pieces)
    assert got.body == body and got.cid == "c1"


def test_a_body_not_last_or_not_bytes_takes_the_whole_path() -> None:
    late = msgpack.packb({"body": b"q" * 100, "to": "a.b", "id": "i"})
    listed = msgpack.packb({"to": "a.b", "id": "i", "body": [1, 2, 3]})
    trailing = msgpack.packb({"to": "a.b", "body": b"q" * 100}) + b"\x00"
    for data in (late, listed):
        _same(decode_pieces([data[:7], data[7:]]), decode(data))
    with pytest.raises(CodecError):
        decode_pieces([trailing[:7], trailing[7:]])


# -- a segment's payload is a view of its record -------------------------------------------------------------


def _plain(frame: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in frame.items()}


def test_a_segment_payload_is_not_copied_out_of_its_record() -> None:
    record = segment_records(ORIGIN, [os.urandom(100_000)], 65536, "multiplex.0001-001")[0]
    frame = parse(record)
    assert isinstance(frame["payload"], memoryview) and frame["payload"].obj is record
    assert _plain(frame) == msgpack.unpackb(record)


_keys = st.sampled_from(["type", "origin", "reply", "id", "index", "count", "payload", "§payload", "x"])
_values = st.none() | st.integers(-5, 1 << 40) | st.text(max_size=12) | st.binary(max_size=300)
_strings_with_the_key = st.sampled_from(["§payload", "a§payload\u00c4", "\u00a7payload"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(_keys, _values | _strings_with_the_key), min_size=6, max_size=6),
    st.binary(max_size=300) | st.text(max_size=20) | st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.sampled_from(["whole", "a byte more", "a byte short"]),
)
def test_parse_of_a_map_of_seven_is_the_unpacked_map(
    head: list[tuple[str, object]], payload: object, segment_like: bool, damage: str
) -> None:
    # segment-shaped maps, the key's bytes inside strings too: the short cut must agree or step aside
    pairs = ([("type", "segment"), ("origin", "o")] if segment_like else []) + head
    record = b"\x87" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs[:6])
    record += msgpack.packb("payload") + msgpack.packb(payload)
    record = {"whole": record, "a byte more": record + b"\x00", "a byte short": record[:-1]}[damage]
    try:
        whole = msgpack.unpackb(record, raw=False, strict_map_key=False)  # what parse means, unpacked whole
    except ValueError:  # ExtraData and OutOfData are ValueErrors
        whole = {}
    if not (isinstance(whole.get("type"), str) and isinstance(whole.get("origin"), str)):
        with pytest.raises(FrameError):
            parse(record)
        return
    assert _plain(parse(record)) == whole


# -- the transport: a large body out and back in -------------------------------------------------------------


@pytest.mark.parametrize("body", [os.urandom(200_000), "ü" * 100_000, {"big": "x" * 100_000}, b"s" * 100])
async def test_the_transport_sends_and_takes_back_a_large_event(body: Any) -> None:
    platform, connector = StubPlatform(ORIGIN), StubConnector()
    transport = stub_transport(platform, connector)
    event = EventEnvelope("some.route", body, {"h": "v"}, reply_to=platform.inbox, cid="7")
    transport.send_event(VirtualTopic("multiplex.0001", 2), ORIGIN, event)
    await asyncio.sleep(0)  # records leave at the end of the loop turn
    assert all(len(r) <= 65536 + 200 for r in connector.records)
    for record in connector.records:
        transport.receive(record)
    assert len(platform.events) == 1
    _same(platform.events[0], event)
    with pytest.raises(AppError) as refused:
        transport.send_event(VirtualTopic("multiplex.0001", 2), ORIGIN, _event(b"x" * (1 << 20)))
    assert refused.value.status == 413
    await transport.close()
