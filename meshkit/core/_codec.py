"""The wire format (docs/protocol/envelope.md): one MsgPack map with descriptive keys, unset fields omitted.

The Mercury engines' older compact format (single-character keys) is decoded too. Anything else that is not
a well-formed envelope raises :class:`CodecError`, and only that.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgpack
from pydantic import BaseModel

from meshkit.core._envelope import FIELDS, EventEnvelope, new_event_id
from meshkit.core._time import iso_utc_ms


class CodecError(ValueError):
    """Bytes that are not a valid event envelope, or a body that cannot be put on the wire."""


_STRING_FIELDS = ("id", "to", "from", "reply_to", "cid", "trace_id", "trace_path", "span_id", "obj_type")
_FLOAT_FIELDS = ("exec_time", "round_trip")
MAX_TTL_MS = 86_400_000  # a day: a larger `ttl` is taken as this

# The compact format of the Mercury engines: flag -> descriptive key.
_COMPACT_KEYS = {
    "0": "id",
    "1": "exec_time",
    "2": "round_trip",
    "4": "exception",
    "5": "exception",
    "6": "annotations",
    "7": "tags",
    "T": "to",
    "R": "reply_to",
    "F": "from",
    "S": "status",
    "H": "headers",
    "B": "body",
    "t": "trace_id",
    "p": "trace_path",
    "X": "cid",
}


#: the values the codec takes as they are; anything else goes through `to_plain` first
PLAIN = (str, int, float, bool, bytes, type(None), dict, list)


def to_plain(value: Any) -> Any:
    """Turn a body into MsgPack-native data (models, datetimes, enums, uuids, sets, tuples included)."""
    if value is None or isinstance(value, str | int | float | bool | bytes):
        return value
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    return _plain_scalar(value)


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return to_plain(value.model_dump())
    if isinstance(value, _dt.datetime):
        return iso_utc_ms(value)
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return [to_plain(v) for v in value]
    raise CodecError(f"cannot encode a {type(value).__name__} in an event body")


def envelope_to_map(event: EventEnvelope) -> dict[str, Any]:
    """The descriptive map of an envelope, unset fields left out."""
    result: dict[str, Any] = {"id": event.id}
    for name, value in event.__dict__.items():
        if value is not None and name in _WIRE_NAMES:
            result[_WIRE_NAMES[name]] = value
    result["status"] = event.status
    if not event.headers:
        result.pop("headers", None)
    deadline = event.deadline
    if deadline is not None:  # the time left when it leaves, in ms: clocks differ between hosts
        result["ttl"] = max(0, int((deadline - time.perf_counter()) * 1000))
    return result


# attribute -> wire key, for the attributes an instance sets (unset ones are the class defaults: None)
_WIRE_NAMES = {name: "from" if name == "sender" else name for name in FIELDS if name not in ("id", "status")}


def encode(event: EventEnvelope) -> bytes:
    return pack(envelope_to_map(event))


Buffer = bytes | bytearray | memoryview


def encode_split(event: EventEnvelope) -> tuple[bytes, Buffer] | None:
    """The envelope as two pieces whose concatenation is its wire form: a head, then the body's own bytes.

    For a bytes or str body (None otherwise): the head is the map with "body" last and the body's MsgPack
    bin/str header, so a large body is never packed into, or copied out of, a whole-envelope buffer.
    """
    body = event.body
    if isinstance(body, str):
        try:
            data: Buffer = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CodecError(f"cannot encode event: {exc}") from exc
        marker = _str_header(len(data))
    elif isinstance(body, bytes | bytearray):
        data, marker = body, bin_header(len(body))
    else:
        return None
    fields = envelope_to_map(event)
    del fields["body"]
    packed = pack(fields)
    count = len(fields)  # at most 16 without the body: a fixmap, or a map16 header (3 bytes) for 16
    rest = packed[1:] if count < 16 else packed[3:]
    return b"".join((_map_header(count + 1), rest, b"\xa4body", marker)), data


def _map_header(count: int) -> bytes:
    return bytes((0x80 | count,)) if count < 16 else b"\xde" + count.to_bytes(2, "big")


def bin_header(size: int) -> bytes:
    """The MsgPack bin marker and length that precede `size` bytes."""
    if size < 0x100:
        return bytes((0xC4, size))
    if size < 0x10000:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def _str_header(size: int) -> bytes:
    if size < 32:
        return bytes((0xA0 | size,))
    if size < 0x100:
        return bytes((0xD9, size))
    if size < 0x10000:
        return b"\xda" + size.to_bytes(2, "big")
    return b"\xdb" + size.to_bytes(4, "big")


def pack(value: dict[str, Any]) -> bytes:
    """MsgPack with the wire format's rules (models, datetimes... as plain data); CodecError otherwise."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(default=_plain_scalar, use_bin_type=True)
    try:
        return packer.pack(value)  # type: ignore[no-any-return]
    except CodecError:
        packer.reset()
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()  # a failed pack may leave half an object in the buffer
        raise CodecError(f"cannot encode event: {exc}") from exc


# One Packer per thread, reused: a fresh one grows its buffer from nothing for every event, which costs
# ~200 us for a 200 KB body (page faults) against ~13 us when the buffer is already there.
_packers = threading.local()


def _refuse_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"MsgPack extension type {code} is not part of the event wire format")


def decode(data: bytes | bytearray | memoryview) -> EventEnvelope:
    """Bytes -> envelope. Raises CodecError, and nothing else, for anything malformed."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises a family of types for truncated/garbage input
        raise CodecError(f"not a MsgPack event envelope: {type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CodecError(f"an event envelope is a MsgPack map, got {type(raw).__name__}")
    return envelope_from_map(raw)


# how far into the first piece decode_pieces looks for the head: larger heads take the general path
_HEAD_LIMIT = 4096
# MsgPack bin/str markers whose length follows in 1, 2 or 4 bytes -> (length bytes, is str)
_LONG_MARKERS = {0xC4: (1, False), 0xC5: (2, False), 0xC6: (4, False), 0xD9: (1, True), 0xDA: (2, True)}
_LONG_MARKERS[0xDB] = (4, True)


def decode_pieces(pieces: Sequence[Buffer]) -> EventEnvelope:
    """The envelope whose wire form is the concatenation of `pieces` (the segments of a large event).

    When the body comes last and is bin or str (as `encode_split` writes it), the body is joined straight
    out of the pieces: one copy, no whole-envelope buffer. Anything else is joined and `decode`d, so the
    result, and every CodecError, is what `decode` gives for the joined bytes.
    """
    if len(pieces) > 1:
        split = split_trailing(pieces[0], "body", sum(len(piece) for piece in pieces))
        if split is not None:
            raw, offset, is_str = split
            body = b"".join([memoryview(pieces[0])[offset:], *pieces[1:]])
            if not is_str:
                raw["body"] = body
                return envelope_from_map(raw)
            try:
                raw["body"] = body.decode("utf-8")
                return envelope_from_map(raw)
            except UnicodeDecodeError:
                pass  # decode() below words the error
    return decode(b"".join(pieces))


def split_trailing(data: Buffer, key: str, total: int) -> tuple[dict[Any, Any], int, bool] | None:
    """A MsgPack map at the start of `data` whose last entry is `key` with a bin or str value that ends at
    byte `total` (of `data` and what follows it): (the other entries, where that value starts, is it str).

    Only the head is unpacked (bounded: _HEAD_LIMIT bytes), so the value itself is never copied here.
    None for anything else (the caller then unpacks the usual way and reports what is wrong).
    """
    head = memoryview(data)[:_HEAD_LIMIT]
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    unpacker.feed(head)
    raw: dict[Any, Any] = {}
    try:
        count = unpacker.read_map_header()
        for _ in range(count - 1):
            name = unpacker.unpack()
            raw[name] = unpacker.unpack()
        if count < 1 or unpacker.unpack() != key:
            return None
        start = unpacker.tell()
    except Exception:  # not a map, a head past the limit, garbage
        return None
    if start >= len(head):
        return None
    marker = head[start]
    if 0xA0 <= marker <= 0xBF:
        width, is_str, size = 0, True, marker & 0x1F
    elif marker in _LONG_MARKERS:
        width, is_str = _LONG_MARKERS[marker]
        if start + 1 + width > len(head):
            return None
        size = int.from_bytes(head[start + 1 : start + 1 + width], "big")
    else:
        return None
    offset = start + 1 + width
    if offset + size != total:  # the value must end the map, and nothing may follow it
        return None
    return raw, offset, is_str


def envelope_from_map(raw: dict[Any, Any]) -> EventEnvelope:
    if raw:
        first = next(iter(raw))
        if isinstance(first, str) and len(first) == 1:
            raw = _from_compact(raw)
    event = EventEnvelope.__new__(EventEnvelope)
    fields = event.__dict__
    for key, value in raw.items():
        if value is None:
            continue
        kind = _FIELD_KINDS.get(key)
        if kind is None:  # unknown keys are ignored
            continue
        name = "sender" if key == "from" else key
        if key == "ttl":
            if isinstance(value, bool) or not isinstance(value, int):
                raise CodecError(f"field 'ttl' must be an integer, got {type(value).__name__}")
            fields["deadline"] = time.perf_counter() + min(max(value, 0), MAX_TTL_MS) / 1000
            continue
        if kind is str:
            if not isinstance(value, str):
                raise CodecError(f"field '{key}' must be a string, got {type(value).__name__}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise CodecError(f"field '{key}' must be an integer, got {type(value).__name__}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CodecError(f"field '{key}' must be a number, got {type(value).__name__}")
            value = float(value)
        elif kind is dict:
            value = _str_map(value, key)
        elif kind is list:  # annotations: any map
            if not isinstance(value, dict):
                raise CodecError(f"field '{key}' must be a map, got {type(value).__name__}")
        elif kind is bytes and not isinstance(value, str):
            # a Java engine may send a serialized exception: keep a readable trace of it, not the bytes
            value = f"<{type(value).__name__} of {len(value) if hasattr(value, '__len__') else 1}>"
        fields[name] = value
    if "headers" not in fields:
        fields["headers"] = {}
    if "id" not in fields:
        fields["id"] = new_event_id()
    return event


# how each wire key is checked: str, int, float, dict (str -> str), list (any map), bytes (exception), body
_FIELD_KINDS: dict[str, type] = {
    **dict.fromkeys(_STRING_FIELDS, str),
    "status": int,
    "ttl": int,
    "exec_time": float,
    "round_trip": float,
    "headers": dict,
    "tags": dict,
    "annotations": list,
    "proof": list,
    "exception": bytes,
    "body": object,
}


def _from_compact(raw: dict[Any, Any]) -> dict[Any, Any]:
    converted: dict[Any, Any] = {}
    for key, value in raw.items():
        name = _COMPACT_KEYS.get(key) if isinstance(key, str) else None
        if name is not None and name not in converted:
            converted[name] = value
    if "id" not in converted and "to" not in converted and "body" not in converted:
        raise CodecError("compact-format envelope has none of the fields id, to or body")
    return converted


def _str_map(value: Any, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CodecError(f"field '{field}' must be a map of strings, got {type(value).__name__}")
    result: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise CodecError(f"field '{field}' has a non-string key {k!r}")
        if isinstance(v, str):
            result[k] = v
        elif isinstance(v, bool | int | float):
            result[k] = str(v).lower() if isinstance(v, bool) else str(v)
        else:
            raise CodecError(f"field '{field}' value for '{k}' must be a string, got {type(v).__name__}")
    return result
