"""The wire format (docs/protocol/envelope.md): one MsgPack map with descriptive keys, as Mercury has it."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from meshkit import CodecError, EventEnvelope, decode, encode
from meshkit.core import iso_utc_ms

# -- what an envelope looks like on the wire ---------------------------------------------------------------


def test_keys_are_descriptive_and_unset_fields_are_omitted() -> None:
    event = EventEnvelope("hello.world", {"a": 1}, {"x": "y"}, id="e1", sender="caller.route", cid="c1")
    wire = msgpack.unpackb(encode(event))
    assert wire == {
        "id": "e1",
        "to": "hello.world",
        "from": "caller.route",
        "cid": "c1",
        "status": 200,
        "headers": {"x": "y"},
        "body": {"a": 1},
    }


def test_every_field_has_its_spec_name() -> None:
    event = EventEnvelope(
        "a.b",
        b"\x00\x01",
        {"h": "v"},
        status=500,
        id="i",
        sender="f.g",
        reply_to="r",
        cid="c",
        trace_id="t",
        trace_path="GET /x",
        span_id="s",
        exec_time=1.5,
        round_trip=2.25,
        tags={"k": "v"},
        annotations={"n": 1},
        obj_type="PoJo",
        exception="ValueError",
    )
    assert set(msgpack.unpackb(encode(event))) == {
        "id",
        "to",
        "from",
        "reply_to",
        "cid",
        "trace_id",
        "trace_path",
        "span_id",
        "status",
        "headers",
        "body",
        "exec_time",
        "round_trip",
        "tags",
        "annotations",
        "obj_type",
        "exception",
    }
    assert decode(encode(event)) == event


def test_no_extension_types_and_bytes_stay_binary() -> None:
    packed = encode(EventEnvelope("a.b", b"\xff" * 3))
    assert msgpack.unpackb(packed)["body"] == b"\xff\xff\xff"
    with pytest.raises(CodecError, match="extension type"):
        decode(msgpack.packb({"to": "a.b", "body": msgpack.ExtType(1, b"x")}))


def test_timestamps_are_iso8601_utc_with_milliseconds() -> None:
    moment = dt.datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert iso_utc_ms(moment) == "2026-11-25T10:00:00.123Z"
    local = moment.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert iso_utc_ms(local) == "2026-11-25T10:00:00.123Z"
    assert decode(encode(EventEnvelope("a.b", {"when": moment}))).body == {"when": "2026-11-25T10:00:00.123Z"}


class Colour(enum.Enum):
    RED = "red"


class Pet(BaseModel):
    name: str
    born: dt.datetime
    colour: Colour
    tags: set[str]


def test_models_and_rich_values_become_plain_data() -> None:
    pet = Pet(name="Rex", born=dt.datetime(2020, 1, 2, tzinfo=dt.UTC), colour=Colour.RED, tags={"a"})
    ident = uuid.UUID(int=7)
    body = decode(encode(EventEnvelope("a.b", {"pet": pet, "id": ident, "pair": (1, 2)}))).body
    assert body == {
        "pet": {"name": "Rex", "born": "2020-01-02T00:00:00.000Z", "colour": "red", "tags": ["a"]},
        "id": str(ident),
        "pair": [1, 2],
    }


def test_a_body_that_cannot_be_encoded_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot encode a object"):
        encode(EventEnvelope("a.b", object()))


def test_unknown_keys_are_ignored_and_absent_equals_nil() -> None:
    event = decode(msgpack.packb({"to": "a.b", "future_field": [1, 2], "status": None, "cid": None}))
    assert event.to == "a.b" and event.status == 200 and event.cid is None
    assert event.id  # an envelope without an id gets one


def test_header_values_that_are_scalars_become_strings() -> None:
    event = decode(msgpack.packb({"to": "a.b", "headers": {"n": 5, "flag": True}}))
    assert event.headers == {"n": "5", "flag": "true"}


def test_the_compact_format_of_the_mercury_engines_is_decoded() -> None:
    compact = {
        "0": "id-1",
        "T": "hello.world",
        "F": "caller",
        "S": 201,
        "H": {"a": "b"},
        "B": "hi",
        "X": "c9",
        "t": "trace",
        "p": "GET /x",
        "1": 0.5,
        "2": 1.5,
        "R": "r.route",
    }
    event = decode(msgpack.packb(compact))
    assert (event.id, event.to, event.sender, event.status, event.headers, event.body) == (
        "id-1",
        "hello.world",
        "caller",
        201,
        {"a": "b"},
        "hi",
    )
    assert (
        event.cid,
        event.trace_id,
        event.trace_path,
        event.exec_time,
        event.round_trip,
        event.reply_to,
    ) == ("c9", "trace", "GET /x", 0.5, 1.5, "r.route")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1, 2, 3], "is a MsgPack map, got list"),
        ("hello", "is a MsgPack map, got str"),
        ({"to": 5}, "field 'to' must be a string"),
        ({"to": "a.b", "status": "200"}, "field 'status' must be an integer"),
        ({"to": "a.b", "status": True}, "field 'status' must be an integer"),
        ({"to": "a.b", "headers": [1]}, "field 'headers' must be a map"),
        ({"to": "a.b", "headers": {"a": [1]}}, "value for 'a' must be a string"),
        ({"to": "a.b", "headers": {1: "x"}}, "non-string key"),
        ({"to": "a.b", "exec_time": "fast"}, "field 'exec_time' must be a number"),
        ({"to": "a.b", "annotations": 3}, "field 'annotations' must be a map"),
        ({"Z": 1, "Q": 2}, "compact-format envelope has none of the fields"),
    ],
)
def test_wrong_types_are_refused_with_a_clear_message(raw: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(msgpack.packb(raw))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81", b"\x85\xa2to", b"\xdf\xff\xff\xff\xff"])
def test_truncated_and_garbage_bytes_are_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


# -- properties: the codec is an identity, and nothing but CodecError ever escapes it --------------------

_text = st.text(max_size=20)
_scalar = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | _text
_body = st.recursive(
    _scalar | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_str_map = st.dictionaries(_text, _text, max_size=4)


@st.composite
def envelopes(draw: st.DrawFn) -> EventEnvelope:
    optional_text = st.none() | _text
    return EventEnvelope(
        draw(optional_text),
        draw(_body),
        draw(_str_map),
        status=draw(st.integers(100, 599)),
        id=draw(_text),
        sender=draw(optional_text),
        reply_to=draw(optional_text),
        cid=draw(optional_text),
        trace_id=draw(optional_text),
        trace_path=draw(optional_text),
        span_id=draw(optional_text),
        exec_time=draw(st.none() | st.floats(0, 1e6)),
        round_trip=draw(st.none() | st.floats(0, 1e6)),
        tags=draw(st.none() | _str_map),
        annotations=draw(st.none() | st.dictionaries(_text, _body, max_size=3)),
        obj_type=draw(optional_text),
        exception=draw(optional_text),
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_decode_of_encode_is_the_identity(event: EventEnvelope) -> None:
    assert decode(encode(event)) == event


@settings(max_examples=400)
@given(envelopes(), st.data())
def test_truncated_envelopes_raise_only_codec_error(event: EventEnvelope, data: st.DataObject) -> None:
    packed = encode(event)
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(CodecError):  # a MsgPack map cut short is never a whole one
        decode(packed[:cut])


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    try:
        event = decode(data)
    except CodecError:
        return  # refused: random bytes may well be no envelope
    assert isinstance(event, EventEnvelope)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=3), _body, max_size=6))
def test_random_maps_raise_only_codec_error(raw: dict[str, object]) -> None:
    try:
        event = decode(msgpack.packb(raw))
    except CodecError:
        return  # refused: a random map may well be no envelope
    assert isinstance(event, EventEnvelope)
