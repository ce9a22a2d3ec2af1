"""Records on the connector: who a record is for, and what it carries (an event, a segment, a control map).

A record is a MsgPack map: ``{"type", "origin", ...}`` (docs/protocol/records.md). Its wire key ``origin``
names the *recipient* app instance ("*" for everyone on a shared partition; the key keeps the name older
meshkit apps read), so a record that reached the wrong app (a topic handed over to a new owner) is recognised
and skipped. In code it is the recipient throughout.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from meshkit.core import Buffer, EventEnvelope, bin_header, encode_split, envelope_to_map, pack

RECIPIENT = "origin"  # the wire key that names a record's recipient (docs/protocol/records.md)
EVERYONE = "*"
DEFAULT_SEGMENT_SIZE = 64 * 1024

_prefix = os.urandom(4).hex()
_counter = itertools.count(1)


class FrameError(ValueError):
    """A record that is not a meshkit frame."""


def event_record(recipient: str, event: EventEnvelope, reply: str | None = None) -> bytes:
    """One record holding the event's map itself (one MsgPack pass each way, no envelope bytes inside).

    `reply` is the sender's virtual topic: the recipient can answer before it has heard the sender's join.
    """
    return pack({"type": "event", RECIPIENT: recipient, "reply": reply, "event": envelope_to_map(event)})


def event_record_pieces(
    recipient: str, event: EventEnvelope, reply: str | None = None
) -> tuple[bytes, Buffer]:
    """The record event_record makes, as (its head, the body's own bytes) whose concatenation it is, for a
    bytes body: a link writes both beside each other, and the body is never copied into a record."""
    split = encode_split(event)
    if split is None or not isinstance(event.body, bytes | bytearray):
        raise ValueError("pieces are for an event with a bytes body")
    head, body = split
    record = pack({"type": "event", RECIPIENT: recipient, "reply": reply})
    return b"\x84" + record[1:] + b"\xa5event" + head, body  # a fixmap of 3 made one of 4: "event" last


def event_records(
    recipient: str, event_bytes: Buffer, segment_size: int = DEFAULT_SEGMENT_SIZE, reply: str | None = None
) -> list[bytes]:
    """One record, or segments of at most `segment_size` payload bytes when the event is larger."""
    if len(event_bytes) <= segment_size:
        return [pack({"type": "event", RECIPIENT: recipient, "reply": reply, "payload": event_bytes})]
    return segment_records(recipient, (event_bytes,), segment_size, reply)


def segment_records(
    recipient: str,
    pieces: Sequence[Buffer],
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    reply: str | None = None,
) -> list[bytes]:
    """The segments of the event whose bytes are the concatenation of `pieces` (e.g. a head and a body).

    Each record is one map, `payload` last, put together from its packed head and slices of the pieces:
    every byte of the event is copied once, into its record, and no whole-event buffer is built.
    """
    total = sum(len(piece) for piece in pieces)
    count = (total + segment_size - 1) // segment_size
    message_id = f"{_prefix}{next(_counter):x}"
    head = {"type": "segment", RECIPIENT: recipient, "reply": reply, "id": message_id, "count": count}
    common = pack(head)
    common = b"\x87" + common[1:]  # a fixmap of 5 fields, made one of 7: index and payload follow
    views = [memoryview(piece) for piece in pieces]
    records: list[bytes] = []
    current, at = 0, 0  # the piece being cut, and where in it
    for n in range(count):
        size = min(segment_size, total - n * segment_size)
        parts: list[Buffer] = [common, b"\xa5index", msgpack.packb(n), b"\xa7payload", bin_header(size)]
        while size:
            taken = views[current][at : at + size]
            parts.append(taken)
            size -= len(taken)
            at += len(taken)
            if at == len(views[current]):
                current, at = current + 1, 0
        records.append(b"".join(parts))
    return records


def batch_record(records: Sequence[bytes]) -> bytes:
    """Several records for one partition as one: what an app sends there in one loop turn leaves together.

    A broker client may cut a run of records into several requests, and the recipient then fetches them in
    pieces, each piece paying a request of its own; one record cannot be cut. A batch holds no batch.
    """
    return msgpack.packb({"type": "batch", RECIPIENT: EVERYONE, "records": list(records)})  # type: ignore[no-any-return]


def control_record(recipient: str, message: dict[str, Any]) -> bytes:
    return msgpack.packb({"type": "control", RECIPIENT: recipient, "payload": message})  # type: ignore[no-any-return]


def parse(record: bytes | bytearray) -> dict[str, Any]:
    """The record's map. A segment's payload is a view of the record: cutting it out would copy it."""
    frame = _segment(record) if record[:1] == b"\x87" else None
    if frame is not None:
        return frame
    try:
        frame = msgpack.unpackb(record, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for garbage
        raise FrameError(f"not a MsgPack record ({type(exc).__name__})") from exc
    if (
        not isinstance(frame, dict)
        or not isinstance(frame.get("type"), str)
        or not isinstance(frame.get(RECIPIENT), str)
    ):
        raise FrameError(f"not a meshkit record (a map with 'type' and '{RECIPIENT}' expected)")
    return frame


def _segment(record: bytes | bytearray) -> dict[str, Any] | None:
    """A map of 7 whose last key is "payload" with a bin value ending the record, as segment_records writes
    it; None for anything else (parse then unpacks it whole).

    The head (the first six entries) is unpacked as a map of its own: that succeeds only if the "payload"
    found is the seventh key itself, not bytes inside an earlier string, so the result is what unpacking the
    whole record gives, without copying the payload.
    """
    at = record.find(b"\xa7payload", 1, _HEAD_LIMIT)
    if at < 0:
        return None
    start = at + 8
    marker = bytes(record[start : start + 1])  # a record read off a link may be a bytearray
    width = _BIN_WIDTHS.get(marker)
    if width is None:
        return None
    offset = start + 1 + width
    if offset + int.from_bytes(record[start + 1 : offset], "big") != len(record):
        return None
    try:
        frame = msgpack.unpackb(b"\x86" + record[1:at], raw=False, strict_map_key=False)
    except Exception:  # "payload" inside a string, or garbage: the whole record says what is wrong
        return None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return None
    if not isinstance(frame.get(RECIPIENT), str):
        return None
    frame["payload"] = memoryview(record)[offset:]
    return frame


_HEAD_LIMIT = 4096  # a segment's head is a few hundred bytes
_BIN_WIDTHS = {b"\xc4": 1, b"\xc5": 2, b"\xc6": 4}  # bin 8/16/32: how many bytes give the length


@dataclass
class _Partial:
    count: int
    started: float
    parts: dict[int, Buffer] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Joins segments back into events; incomplete ones expire, and the total held is bounded."""

    def __init__(self, max_event_bytes: int, expiry_seconds: float = 60.0) -> None:
        self.max_event_bytes = max_event_bytes
        self.expiry_seconds = expiry_seconds
        self._partials: dict[str, _Partial] = {}
        self._held = 0

    def add(self, frame: dict[str, Any]) -> bytes | None:
        """The whole event once its last segment arrives; None while parts are missing."""
        pieces = self.add_pieces(frame)
        return None if pieces is None else b"".join(pieces)

    def add_pieces(self, frame: dict[str, Any]) -> list[Buffer] | None:
        """The segment payloads in order once the last arrives (their concatenation is the event)."""
        message_id, index, count, payload = (
            frame.get("id"),
            frame.get("index"),
            frame.get("count"),
            frame.get("payload"),
        )
        if not (
            isinstance(message_id, str)
            and isinstance(index, int)
            and isinstance(count, int)
            and isinstance(payload, bytes | memoryview)
            and 0 <= index < count
        ):
            raise FrameError("malformed segment")
        self._expire()
        # everything held is bounded too (twice the largest event): the oldest incomplete events go first
        while self._partials and self._held + len(payload) > 2 * self.max_event_bytes:
            self._drop(next(iter(self._partials)))
        partial = self._partials.get(message_id)
        if partial is None:
            if count * len(payload) > self.max_event_bytes * 2:
                raise FrameError(f"segmented event of {count} parts exceeds max.event.size")
            partial = self._partials[message_id] = _Partial(count, time.monotonic())
        if partial.count != count or index in partial.parts:
            raise FrameError("inconsistent segment")
        partial.parts[index] = payload
        partial.size += len(payload)
        self._held += len(payload)
        if partial.size > self.max_event_bytes:
            self._drop(message_id)
            raise FrameError("segmented event exceeds max.event.size")
        if len(partial.parts) < count:
            return None
        self._drop(message_id)
        return [partial.parts[n] for n in range(count)]

    def _drop(self, message_id: str) -> None:
        partial = self._partials.pop(message_id, None)
        if partial is not None:
            self._held -= partial.size

    def _expire(self) -> None:
        if not self._partials:
            return
        cutoff = time.monotonic() - self.expiry_seconds
        for message_id in [m for m, p in self._partials.items() if p.started < cutoff]:
            self._drop(message_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._partials)

    @property
    def held_bytes(self) -> int:
        return self._held
