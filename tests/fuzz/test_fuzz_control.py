"""Target 3, control messages: a peer's (``MeshNode._on_control``), the monitors' log (``service.monitor``
partition 0, ``PresenceMonitor._on_record``) and an app's keep-alives on its presence websocket.

- ``MeshNode._on_control`` handles a message or rejects it with FrameError (the transport logs it as a
  skipped record), nothing else; the routing table stays presentable (``/info/routes``).
- ``PresenceMonitor._on_record`` must catch whatever a record does: it runs in the connector's consumer.
  Afterwards the monitor's state is still presentable (``/info`` lists it), can be sent to a peer monitor
  (the answer to a ``sync``), and the next housekeeping tick runs.
- The keep-alives a monitor takes from an app (``_on_message``) are followed by a housekeeping tick
  (``_tick``), which must not fail on what they left behind: a tick that fails loses its heartbeat, its
  keep-alive checks and its orphan release, and a state that makes one fail makes them all fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.websockets import WebSocketDisconnect

from meshkit import FunctionRegistry, Platform
from meshkit.connectors import ConnectorError
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import MeshNode, TopicLayout
from meshkit.mesh._frames import EVERYONE, FrameError, control_record
from meshkit.mesh._vouched import ORIGIN
from meshkit.security import Identity
from presence_server._monitor import PresenceMonitor, Session
from tests.fuzz import (
    TOPIC_A,
    Errors,
    MeshApp,
    control_messages,
    describe,
    event_loop,
    floats,
    fuzz_settings,
    fuzz_timeout,
    ints,
    mesh_config,
    start_mesh_app,
    stop_mesh_app,
    substitute,
    tally,
    text,
    values,
    wire_bytes,
)
from tests.support.identities import PUBLIC_KEY

pytestmark = pytest.mark.timeout(fuzz_timeout(0.05))

registry = FunctionRegistry()


@registry.route("fuzz.echo")
async def echo(body: Any) -> Any:
    return body


# -- MeshNode._on_control -----------------------------------------------------------------------------------


@dataclass
class App:
    runner: Any
    errors: Errors
    app: MeshApp


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    with event_loop() as (runner, errors):
        mesh_app = runner.run(start_mesh_app(MemoryBroker(), "fuzz-control", list(registry), TOPIC_A))
        try:
            yield App(runner, errors, mesh_app)
        finally:
            runner.run(stop_mesh_app(mesh_app))


def test_mesh_node_control_messages(app: App) -> None:
    node, placeholders = app.app.node, {"$SELF": app.app.platform.origin}

    @fuzz_settings()
    @given(st.lists(st.tuples(control_messages(), st.booleans()), min_size=1, max_size=4))
    def one_input(messages: list[tuple[Any, bool]]) -> None:
        tally("3 MeshNode._on_control")
        app.errors.take()
        node.table.__init__()  # type: ignore[misc]  # each input starts with no peers: it stands on its own
        node.vouched.__init__()  # type: ignore[misc]
        node.transport.return_addresses.clear()

        async def apply() -> None:
            for message, vouched in messages:
                message = substitute(message, placeholders)
                if not isinstance(message, dict):
                    continue  # the transport refuses those before: "control record without a map"
                if vouched:  # most of what matters happens past the signature: sign as a vouched peer
                    message = vouch_and_sign(node, message)
                try:
                    node._on_control(message)
                except FrameError:
                    pass  # rejected: the transport counts it as a skipped record
                node.table.describe()  # what /info/routes shows
            if node._tasks:  # the answers to joins, published in the background
                await asyncio.wait(node._tasks, timeout=2.0)

        app.runner.run(apply())
        new = app.errors.take()
        assert not new, f"errors logged for {describe(messages, 2000)}:\n" + "\n".join(new)

    one_input()


PEER = Identity()


def vouch_and_sign(node: MeshNode, message: dict[Any, Any]) -> dict[Any, Any]:
    """The message signed by a peer the monitor vouched for (when it names an origin one could have)."""
    origin = message.get("origin")
    if not isinstance(origin, str) or not ORIGIN.fullmatch(origin):
        return message
    node._on_notice({"type": "member", "origin": origin, "key": PEER.public_key})
    try:
        return PEER.sign_control(message)
    except (OverflowError, TypeError, ValueError):  # not packable: it stays unsigned
        return message


# -- the monitor: service.monitor partition 0 ---------------------------------------------------------------

MONITOR_KINDS = ["claim", "leave", "monitor", "bye", "sync", "snapshot", "loopback", "join", ""]
NUMBERS = st.one_of(st.integers(-3, 300), ints, floats, st.sampled_from([True, "1", "x", None, 10**6]))
NAMES = text | st.sampled_from(["$MONITOR", "$OTHER", "20260101" + "a" * 32])


CONNECTION_FIELDS = {
    "origin": NAMES,
    "name": text,
    "version": text,
    "type": text,
    "group": NUMBERS,
    "created": text,
    "topic": NUMBERS,
    "monitor": NAMES,
    "updated": text,
    "seq": NUMBERS,
    "key": text,
}


@st.composite
def connection_maps(draw: st.DrawFn) -> Any:
    """A connection as a snapshot lists it: right, with wrong types, missing or extra fields."""
    result: dict[Any, Any] = {}
    for key, strategy in CONNECTION_FIELDS.items():
        if draw(st.integers(0, 9)):
            result[key] = draw(strategy) if draw(st.integers(0, 5)) else draw(values(2))
    if draw(st.integers(0, 9)) == 0:
        result[draw(text)] = draw(values(2))
    return result if draw(st.integers(0, 9)) else draw(values(3))


HELLO_INFO = st.one_of(
    st.fixed_dictionaries(  # what a monitor puts in a claim
        {
            "name": text,
            "version": text,
            "personality": text,
            "group": st.integers(1, 10),
            "created": text,
            "key": text,
        }
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "name": text | values(1),
            "version": text | values(1),
            "personality": text | values(1),
            "group": NUMBERS,
            "created": text | values(1),
            "key": text | values(1),
        },
    ),
)
SNAPSHOTS = st.fixed_dictionaries(
    {},
    optional={
        "connections": st.lists(connection_maps(), max_size=3) | values(2),
        "monitors": st.dictionaries(NAMES, text | values(1), max_size=2) | values(2),
    },
)
MONITOR_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "topic": NUMBERS,
    "origin": NAMES | values(1),
    "monitor": NAMES | values(1),
    "info": HELLO_INFO | values(2),
    "id": NAMES | values(1),
    "time": text | values(1),
    "seen": st.dictionaries(NAMES, st.tuples(NUMBERS, text).map(list) | values(2), max_size=3) | values(2),
    "from": NAMES,
    "to": NAMES,
    "state": SNAPSHOTS | values(2),
    "reason": text,
}
# the fields each kind of message uses: usually there, of the right type or not; the others now and then
MONITOR_USES = {
    "claim": ["topic", "origin", "monitor", "info"],
    "leave": ["origin", "monitor", "reason"],
    "monitor": ["id", "time", "seen"],
    "bye": ["id"],
    "sync": ["from"],
    "snapshot": ["to", "state"],
    "loopback": ["id"],
}
MONITOR_TYPES = st.sampled_from(MONITOR_KINDS) | values(1)
MONITOR_TO = st.sampled_from(["$MONITOR", "$MONITOR", "$OTHER"]) | NAMES


@st.composite
def monitor_messages(draw: st.DrawFn) -> Any:
    """What monitors say on partition 0 (claim, leave, monitor, bye, sync, snapshot, loopback), any shape."""
    if draw(st.integers(0, 19)) == 0:
        return draw(values(4))
    message: dict[Any, Any] = {}
    kind = draw(MONITOR_TYPES) if draw(st.integers(0, 19)) else None
    if kind is not None:
        message["type"] = kind
    uses = MONITOR_USES.get(kind, []) if isinstance(kind, str) else []
    for key in sorted(MONITOR_FIELDS):
        if draw(st.integers(0, 9)) < (9 if key in uses else 1):
            message[key] = draw(MONITOR_TO if key == "to" else MONITOR_FIELDS[key])
    return message


@st.composite
def monitor_records(draw: st.DrawFn) -> Any:
    """Mostly control records of any shape; sometimes other frames or garbage."""
    choice = draw(st.integers(0, 19))
    if choice == 0:
        return draw(wire_bytes())
    if choice == 1:
        return {"type": draw(st.sampled_from(["event", "segment", "control"])), "origin": EVERYONE}
    origin = draw(st.sampled_from([EVERYONE, EVERYONE, "x"]))
    return {"type": "control", "origin": origin, "payload": draw(monitor_messages())}


INFO = {
    "name": "a",
    "version": "1",
    "personality": "APP",
    "group": 1,
    "created": "2026-01-01T00:00:00.000Z",
    "key": PUBLIC_KEY,
}


def control(**message: Any) -> dict[str, Any]:
    """A control record on partition 0 carrying `message` (for the explicit examples)."""
    return {"type": "control", "origin": EVERYONE, "payload": message}


@dataclass
class Monitor:
    runner: Any
    errors: Errors
    monitor: PresenceMonitor
    placeholders: dict[str, str]

    def record(self, record: Any) -> bytes:
        if isinstance(record, bytes):
            return record
        filled = substitute(record, self.placeholders)
        return control_record(filled["origin"], filled["payload"]) if "payload" in filled else _pack(filled)

    def reset(self) -> None:
        """Each input starts from a mesh of one monitor (this one), so that inputs stand on their own."""
        state = self.monitor.state
        state.connections.clear()
        state.holders.clear()
        state.monitors.clear()
        state.heartbeat({"id": self.monitor.id})
        self.monitor.sessions.clear()

    async def housekeeping(self) -> None:
        """One housekeeping tick, as `_housekeeping` runs it every heartbeat: a broker that fails now and
        then (ConnectorError) is its business; anything else raised here is a tick the input broke."""
        with contextlib.suppress(ConnectorError):
            await self.monitor._tick()


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def monitor() -> Iterator[Monitor]:
    with event_loop() as (runner, errors):
        platform = Platform(mesh_config(**{"monitor.heartbeat": "0.05"}), name="fuzz-monitor", functions=[])
        runner.run(platform.start())
        presence = PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(), 10)
        runner.run(presence.start())
        # housekeeping runs when a test says so (Monitor.housekeeping), not in between, at random
        housekeeper, presence._housekeeper = presence._housekeeper, None
        if housekeeper is not None:
            housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                runner.run(asyncio.wait_for(housekeeper, 5))
        placeholders = {"$MONITOR": presence.id, "$OTHER": "20261231" + "b" * 32}
        try:
            yield Monitor(runner, errors, presence, placeholders)
        finally:
            runner.run(presence.stop())
            runner.run(platform.stop())


def test_monitor_partition_zero_records(monitor: Monitor) -> None:
    """Nothing a record on service.monitor partition 0 holds escapes PresenceMonitor._on_record."""

    @fuzz_settings()
    @given(st.lists(monitor_records(), min_size=1, max_size=4))
    @example([control(type="snapshot", to="$MONITOR", state=None)])  # AttributeError from MeshState.merge
    @example([control(type="snapshot", to="$MONITOR", state={"monitors": None})])  # AttributeError, merge
    @example([control(type="claim", topic=math.inf, origin="o", monitor="m", info=INFO)])  # OverflowError
    def one_input(records: list[Any]) -> None:
        tally("3 PresenceMonitor._on_record")
        monitor.reset()
        monitor.errors.take()

        async def apply() -> None:
            for record in records:
                monitor.monitor._on_record(monitor.record(record))  # must not raise
            await asyncio.sleep(0)  # snapshots sent in answer to a sync

        try:
            monitor.runner.run(apply())
        finally:
            monitor.reset()
        new = monitor.errors.take()
        assert not new, f"errors logged for {describe(records, 2000)}:\n" + "\n".join(new)

    one_input()


def test_monitor_state_stays_presentable(monitor: Monitor) -> None:
    """Whatever partition 0 said (a record that fails half-way included), /info can still list the mesh,
    the state can still be sent to a monitor that asks for it (`sync`) and housekeeping still runs."""

    @fuzz_settings()
    @given(st.lists(monitor_records(), min_size=1, max_size=4))
    # a group past 64 bits: the state can no longer be packed (no answer to a sync)
    @example([control(type="claim", topic=0, origin="o", monitor="m", info={**INFO, "group": 2.0**64})])
    # a connection of None fields: /info fails
    @example(
        [control(type="snapshot", to="$MONITOR", state={"connections": [dict.fromkeys(CONNECTION_FIELDS)]})]
    )
    # a monitor id that is not a string: the next housekeeping tick fails (sorted() of int and str)
    @example([control(type="snapshot", to="$MONITOR", state={"monitors": {7: "x"}})])
    def one_input(records: list[Any]) -> None:
        tally("3 PresenceMonitor state after records")
        monitor.reset()
        monitor.errors.take()

        async def apply() -> None:
            for record in records:
                try:
                    monitor.monitor._on_record(monitor.record(record))
                except Exception:
                    pass  # test_monitor_partition_zero_records reports those; the consumer carries on
            json.dumps(await monitor.monitor.additional_info())  # GET /info
            control_record(EVERYONE, {"type": "snapshot", "state": monitor.monitor.state.snapshot()})
            await monitor.housekeeping()

        try:
            monitor.runner.run(apply())
        finally:
            monitor.reset()

    one_input()


# -- the monitor: keep-alives, then housekeeping ------------------------------------------------------------


class FakeWebSocket:
    """What a session's websocket must do for housekeeping: be closed when the app is dropped."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


SEQUENCES = st.integers(0, 10**6) | st.integers() | st.sampled_from([2**63, 2**64, -(2**63) - 1])
ALIVE_TYPES = st.sampled_from(["alive", "alive", "hello", "ALIVE"]) | text


@st.composite
def keepalive_texts(draw: st.DrawFn) -> str | None:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return None  # a binary frame: no text
    if choice == 1:
        return draw(text)  # not JSON
    if choice == 2:
        return json.dumps(draw(json_values))
    alive: dict[str, Any] = {"type": draw(ALIVE_TYPES)}
    if draw(st.integers(0, 9)):
        alive["seq"] = draw(SEQUENCES)
    if draw(st.integers(0, 4)) == 0:
        alive[draw(text)] = draw(json_values)
    return json.dumps(alive)


def test_keepalives_then_housekeeping(monitor: Monitor) -> None:
    """What an app sends on its presence websocket after `ready`, then the monitor's next housekeeping tick:
    `_tick` may fail only with ConnectorError (a broker problem, not the input's)."""
    origin = "20260101" + "c" * 32

    @fuzz_settings()
    @given(st.lists(keepalive_texts(), min_size=1, max_size=4))
    @example(['{"type": "alive", "seq": 18446744073709551616}'])  # OverflowError from msgpack in _tick
    @example(['{"type": "alive", "seq": -9223372036854775809}'])
    def one_input(texts: list[str | None]) -> None:
        tally("3 PresenceMonitor keep-alives + _tick")
        monitor.reset()
        session = Session(FakeWebSocket(), time.monotonic(), 1)  # type: ignore[arg-type]
        monitor.monitor.sessions[origin] = session
        for text_frame in texts:
            message = {"type": "websocket.receive", "text": text_frame}
            if text_frame is None:
                message = {"type": "websocket.receive", "bytes": b"\x00"}
            try:
                monitor.monitor._on_message(session, origin, message)
            except WebSocketDisconnect:
                pass

        try:
            monitor.runner.run(monitor.housekeeping())  # the next tick publishes what the sessions said
        finally:
            monitor.reset()

    one_input()
