"""The wire format (SPEC §4): one MsgPack map with descriptive string keys, optional fields omitted.

The Mercury engines' older compact format (single-character keys) is decoded too. Anything else that is not
a well-formed envelope raises :class:`CodecError`, and only that.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import threading
import uuid
from typing import Any

import msgpack
from pydantic import BaseModel

from meshkit._envelope import FIELDS, EventEnvelope, new_event_id


class CodecError(ValueError):
    """Bytes that are not a valid event envelope, or a body that cannot be put on the wire."""


_STRING_FIELDS = ("id", "to", "from", "reply_to", "cid", "trace_id", "trace_path", "span_id", "obj_type")
_FLOAT_FIELDS = ("exec_time", "round_trip")

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


def iso_utc_ms(value: _dt.datetime) -> str:
    """`2026-11-25T10:00:00.000Z`: UTC, milliseconds; a naive datetime is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    return iso_utc_ms(_dt.datetime.now(_dt.UTC))


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
    return result


# attribute -> wire key, for the attributes an instance sets (unset ones are the class defaults: None)
_WIRE_NAMES = {name: "from" if name == "sender" else name for name in FIELDS if name not in ("id", "status")}


def encode(event: EventEnvelope) -> bytes:
    return pack(envelope_to_map(event))


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
    "exec_time": float,
    "round_trip": float,
    "headers": dict,
    "tags": dict,
    "annotations": list,
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
