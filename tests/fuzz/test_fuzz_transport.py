"""Target 2, an app's Kafka record handler: ``EventTransport.receive`` of a real mesh node, in process.

Two mesh nodes share an in-memory broker the way two apps share Kafka: node A (functions ``fuzz.*``) on
``multiplex.0001-000`` and node B (no functions) on ``multiplex.0001-001``, both on their closed user group's
control channel, without a presence monitor (the tests give each its virtual topic). A's record handler is
then fed what a broker could hand it: garbage bytes, MsgPack of any shape, event records with embedded maps
or envelope bytes, segments (of real events, reordered, dropped, duplicated, tampered with, and made up),
control messages of any shape, and records for other apps.

For every input: the handler returns (it never raises), nothing is logged at ERROR (a record that reaches
the handler's catch-all is an exception nobody expected), no worker stays busy once the loop settles, and
no partially reassembled event holds more than max.event.size. Afterwards B's request to ``fuzz.echo``
crosses the transport and is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshkit import EventEnvelope, FunctionRegistry, encode
from meshkit.connectors.memory import MemoryBroker
from meshkit.mesh._frames import EVERYONE, Reassembler
from tests.fuzz import (
    ADDRESSES,
    MAX_EVENT_BYTES,
    OTHER_ORIGIN,
    ROUTES,
    SEGMENT_SIZE,
    TOPIC_A,
    TOPIC_B,
    TOPICS,
    Errors,
    MeshApp,
    busy_pools,
    control_messages,
    describe,
    envelope_maps,
    event_loop,
    fuzz_settings,
    fuzz_timeout,
    ints,
    settle,
    start_mesh_app,
    stop_mesh_app,
    substitute,
    tally,
    text,
    valid_envelopes,
    values,
    wire_bytes,
    zeros,
)
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(fuzz_timeout(0.1))

registry = FunctionRegistry()


@registry.route("fuzz.echo", instances=2)
async def echo(headers: dict[str, str], body: Any) -> EventEnvelope:
    return EventEnvelope(body=body, headers=headers)


@registry.route("fuzz.yield", instances=1, max_queue=2)
async def yielding(body: Any) -> Any:
    """Finishes in a task of its own, a few loop turns later; a backlog of two, then 503."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return body


@registry.route("fuzz.sync", instances=2)
def sync(body: Any) -> Any:
    return body


@registry.route("fuzz.private", private=True)
async def private(body: Any) -> str:
    return "in process only"


@registry.route("fuzz.fail")
async def fail(body: Any) -> None:
    raise RuntimeError("a handler that fails")


assert [spec.route for spec in registry] == ROUTES

FRAME_ORIGINS = st.sampled_from(["$SELF", "$SELF", EVERYONE, OTHER_ORIGIN]) | text
SEGMENT_IDS = st.sampled_from(["m1", "m2", "m3"]) | text | ints | st.none()
# built once: building a strategy costs far more than drawing from it
WIRE = wire_bytes(ADDRESSES)
EVENT_MAPS = envelope_maps(ADDRESSES, to=ADDRESSES)
ENVELOPES = valid_envelopes(ADDRESSES)
REPLIES = st.none() | TOPICS | values(2)
TAMPERED = values(2) | st.integers(-5, 10**6) | ints
INDEXES = st.integers(-2, 4) | ints | values(1)
SEGMENT_COUNTS = st.integers(-2, 6) | ints | values(1)
SIZES = st.integers(0, 3 * MAX_EVENT_BYTES // 4) | st.integers(0, 64)


def pack(frame: Any) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


@st.composite
def frame_head(draw: st.DrawFn, kind: str) -> dict[Any, Any]:
    """`type` and `origin`, usually right, sometimes missing or of the wrong type; maybe `reply`."""
    frame: dict[Any, Any] = {}
    choice = draw(st.integers(0, 19))
    if choice > 1:
        frame["type"] = kind
    elif choice == 1:
        frame["type"] = draw(values(3))
    choice = draw(st.integers(0, 19))
    if choice > 1:
        frame["origin"] = draw(FRAME_ORIGINS)
    elif choice == 1:
        frame["origin"] = draw(values(3))
    if draw(st.booleans()):
        frame["reply"] = draw(REPLIES)
    return frame


@st.composite
def event_frames(draw: st.DrawFn) -> list[dict[Any, Any]]:
    frame = draw(frame_head(draw(st.sampled_from(["event", "event", "event", "segment", "other"]))))
    how = draw(st.sampled_from(["map", "map", "bytes", "both", "neither", "not-a-map"]))
    if how in ("map", "both"):
        frame["event"] = draw(EVENT_MAPS)
    if how in ("bytes", "both"):
        frame["payload"] = draw(WIRE)
    if how == "not-a-map":
        frame[draw(st.sampled_from(["event", "payload"]))] = draw(values(4))
    if draw(st.integers(0, 4)) == 0:
        frame[draw(text)] = draw(values(3))
    return [frame]


@st.composite
def segmented_events(draw: st.DrawFn) -> list[dict[Any, Any]]:
    """A real event in segments, then reordered, dropped, duplicated or tampered with."""
    event = draw(ENVELOPES)
    event.to = draw(ADDRESSES)
    data = encode(event) if draw(st.integers(0, 4)) else draw(WIRE)
    size = draw(st.integers(1, 2 * SEGMENT_SIZE))
    count = max(1, -(-len(data) // size))
    head = draw(frame_head("segment"))
    message_id = draw(SEGMENT_IDS)
    frames = [
        {**head, "id": message_id, "index": n, "count": count, "payload": data[n * size : (n + 1) * size]}
        for n in range(count)
    ]
    frames = draw(st.permutations(frames)) if draw(st.booleans()) else frames
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["drop", "duplicate", "tamper"]))
        if not frames:
            break
        where = draw(st.integers(0, len(frames) - 1))
        if action == "drop":
            del frames[where]
        elif action == "duplicate":
            frames.insert(draw(st.integers(0, len(frames))), dict(frames[where]))
        else:
            key = draw(st.sampled_from(["id", "index", "count", "payload"]))
            frames[where] = {**frames[where], key: draw(TAMPERED)}
    return frames


@st.composite
def made_up_segments(draw: st.DrawFn) -> list[dict[Any, Any]]:
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        frame = draw(frame_head("segment"))
        frame["id"] = draw(SEGMENT_IDS)
        frame["index"] = draw(INDEXES)
        frame["count"] = draw(SEGMENT_COUNTS)
        size = draw(SIZES)
        frame["payload"] = zeros(size) if draw(st.integers(0, 9)) else draw(values(2))
        frames.append(frame)
    return frames


@st.composite
def control_frames(draw: st.DrawFn) -> list[dict[Any, Any]]:
    frame = draw(frame_head("control"))
    frame["payload"] = draw(control_messages())
    return [frame]


@st.composite
def batch_frames(draw: st.DrawFn) -> list[dict[Any, Any]]:
    """A batch record: records of any kind inside, or junk where the list or a record should be."""
    frame = draw(frame_head("batch"))
    how = draw(st.integers(0, 9))
    if how == 0:
        frame["records"] = draw(values(2))
    elif how > 1:  # (1: no records at all)
        inner: list[Any] = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.integers(0, 5))
            if kind == 0:
                inner.append(draw(values(1)))  # not a record
            elif kind == 1:
                inner.append({"type": "batch", "origin": EVERYONE, "records": [draw(WIRE)]})  # nested
            elif kind == 2:
                inner.append(draw(WIRE))
            else:
                inner.extend(draw(event_frames()))
        frame["records"] = inner
    return [frame]


@st.composite
def records(draw: st.DrawFn) -> list[bytes | dict[Any, Any]]:
    """One input: a few records, each raw bytes or a frame (a dict, packed once placeholders are filled)."""
    result: list[bytes | dict[Any, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            result.append(draw(WIRE))
        elif kind == 1:
            result.append(draw(values()))  # packed: MsgPack of any shape
        elif kind <= 4:
            result.extend(draw(event_frames()))
        elif kind == 5:
            result.extend(draw(segmented_events()))
        elif kind == 6:
            result.extend(draw(made_up_segments()))
        elif kind == 7:
            result.extend(draw(batch_frames()))
        else:
            result.extend(draw(control_frames()))
    return result


# -- the two nodes -------------------------------------------------------------------------------------------


@dataclass
class Mesh:
    runner: asyncio.Runner
    errors: Errors
    a: MeshApp
    b: MeshApp
    placeholders: dict[str, str]


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with event_loop() as (runner, errors):

        async def start() -> Mesh:
            broker = MemoryBroker()
            a = await start_mesh_app(broker, "fuzz-a", list(registry), TOPIC_A)
            b = await start_mesh_app(broker, "fuzz-b", [], TOPIC_B, peers=[a])
            # B learns A's routes from A's answer to its join
            await eventually(lambda: b.node.table.origins("fuzz.echo"), what="A's routes at B")
            assert b.node.table.origins("fuzz.echo") == [a.platform.origin]
            return Mesh(runner, errors, a, b, {"$SELF": a.platform.origin})

        mesh = runner.run(start())
        try:
            yield mesh
        finally:
            runner.run(stop_mesh_app(mesh.b))
            runner.run(stop_mesh_app(mesh.a))


def to_bytes(record: Any, placeholders: dict[str, str]) -> bytes:
    """Raw bytes as they are; anything else packed once the placeholders are filled in."""
    if isinstance(record, bytes):
        return record
    if isinstance(record, dict) and record.get("type") == "batch" and isinstance(record.get("records"), list):
        # the records inside a batch are packed records themselves
        inner = [to_bytes(r, placeholders) if isinstance(r, dict) else r for r in record["records"]]
        record = {**record, "records": inner}
    return pack(substitute(record, placeholders))


async def feed(mesh: Mesh, frames: list[bytes | dict[Any, Any]]) -> None:
    transport = mesh.a.node.transport
    # each input starts with an empty reassembler, so that an input stands on its own (and shrinks);
    # what segments that never complete do to it is test_the_reassembler_holds_a_bounded_total below
    transport._reassembler = joiner = Reassembler(MAX_EVENT_BYTES)
    for n, frame in enumerate(frames):
        record = to_bytes(frame, mesh.placeholders)
        transport.receive(record)  # anything raised here fails the test: a record stopped the consumer
        partials = {m: p.size for m, p in joiner._partials.items() if p.size > MAX_EVENT_BYTES}
        assert not partials, f"record {n} left partial events above max.event.size: {partials}"
    await settle(mesh.a.platform)


def test_the_record_handler_survives_any_record(mesh: Mesh) -> None:
    @fuzz_settings()
    @given(records())
    def one_input(frames: list[bytes | dict[Any, Any]]) -> None:
        tally("2 EventTransport.receive")
        mesh.errors.take()
        mesh.runner.run(feed(mesh, frames))
        new = mesh.errors.take()
        assert not new, f"errors logged for {describe(frames, 2000)}:\n" + "\n".join(new)

    one_input()

    async def afterwards() -> None:
        await settle(mesh.a.platform)
        assert busy_pools(mesh.a.platform) == {}
        body = {"after": "the fuzz", "n": 1}
        reply = await mesh.b.platform.call(EventEnvelope("fuzz.echo", body), 5.0)
        assert (reply.status, reply.body) == (200, body)
        assert reply.sender == "fuzz.echo"
        assert mesh.a.node.transport._reassembler.held_bytes <= MAX_EVENT_BYTES * 2

    mesh.runner.run(afterwards())
    assert not mesh.errors.seen, "\n".join(mesh.errors.seen)


# -- the reassembler over many inputs -----------------------------------------------------------------------


@st.composite
def incomplete_segments(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Segments of events whose other segments never come (a peer that dies mid-event, or one that lies)."""
    frames = []
    for _ in range(draw(st.integers(1, 12))):
        count = draw(st.integers(2, 8))
        size = draw(st.integers(1, 2 * MAX_EVENT_BYTES // count))
        frames.append(
            {
                "type": "segment",
                "origin": "$SELF",
                "id": draw(st.text("abcdefgh", min_size=1, max_size=3)),
                "index": draw(st.integers(0, count - 1)),
                "count": count,
                "payload": zeros(size),
            }
        )
    return frames


def first_of_two(message_id: str, size: int) -> dict[str, Any]:
    return {
        "type": "segment",
        "origin": "$SELF",
        "id": message_id,
        "index": 0,
        "count": 2,
        "payload": zeros(size),
    }


def test_the_reassembler_holds_a_bounded_total(mesh: Mesh) -> None:
    """The Reassembler says "the total held is bounded": a stream of segments that never complete must not
    pin more than a fixed amount (taken here as twice max.event.size, the most one event may claim)."""

    @fuzz_settings()
    @given(incomplete_segments())
    @example([first_of_two(message_id, MAX_EVENT_BYTES) for message_id in "abc"])  # 3 x 8 KB held
    def one_input(frames: list[dict[str, Any]]) -> None:
        tally("2 EventTransport reassembler total")
        transport = mesh.a.node.transport
        transport._reassembler = joiner = Reassembler(MAX_EVENT_BYTES)

        async def deliver() -> None:
            for frame in frames:
                transport.receive(to_bytes(frame, mesh.placeholders))

        mesh.runner.run(deliver())
        assert joiner.held_bytes <= 2 * MAX_EVENT_BYTES, (
            f"{joiner.held_bytes} bytes held for {len(joiner._partials)} incomplete events "
            f"(max.event.size={MAX_EVENT_BYTES})"
        )

    one_input()
