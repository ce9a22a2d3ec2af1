"""Fuzzing the edges that take input from outside (hardening point 9), with hypothesis.

The targets: the envelope decoder, an app's Kafka record handler (``EventTransport.receive``), the control
messages of the mesh (``MeshNode._on_control``, the monitor's ``service.monitor`` partition 0 and its
websocket keep-alives), ``POST /api/event`` on a real server, the presence websocket of a real monitor, the
SSE parser and frame decoder of event streams (``meshkit.http._sse``), meshkit's stream reader fed any
body by a real server (``PostOffice.stream(..., endpoint=...)``), and the direct path's framed TCP reader.

How many inputs: ``MESHKIT_FUZZ_EXAMPLES`` per target (default 200, what ``make test`` runs); ``make fuzz``
raises it (25,000 per target, well over 100,000 in all) and prints what each target actually ran. Without
that variable the runs are derandomized (``make test`` sees the same inputs every time) and start with the
failures found before, kept as ``@example``s; with it they are random, skip those, and keep new failures in
the git-ignored ``.hypothesis/`` database to be replayed first next time.

This module holds what the targets share: the settings, the count of inputs run, and the strategies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from meshkit import AppConfig, EventEnvelope, FunctionSpec, Platform, encode
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import MONITOR_TOPIC, MeshNode

# -- how many inputs ---------------------------------------------------------------------------------------

EXAMPLES_VARIABLE = "MESHKIT_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 200
EXAMPLES = int(os.environ.get(EXAMPLES_VARIABLE) or DEFAULT_EXAMPLES)
RANDOM = bool(os.environ.get(EXAMPLES_VARIABLE))  # a deliberate fuzz run: random, with the database

settings.register_profile(
    "meshkit-fuzz",
    max_examples=EXAMPLES,
    deadline=None,  # a slow input is not a failure; a stuck one is caught by the targets' own checks
    derandomize=not RANDOM,
    database=settings.default.database if RANDOM else None,
    suppress_health_check=list(HealthCheck),
    # explaining re-runs a failure hundreds of times; the explicit examples (failures found before, kept with
    # @example) run in `make test` every time, while a fuzz run spends its inputs on finding new ones
    phases=[p for p in Phase if p is not Phase.explain and not (RANDOM and p is Phase.explicit)],
    print_blob=True,
)
PROFILE = settings.get_profile("meshkit-fuzz")


def fuzz_settings(share: float = 1.0, minimum: int = 10) -> settings:
    """The fuzz profile with `share` of MESHKIT_FUZZ_EXAMPLES (slow targets run fewer inputs)."""
    return settings(PROFILE, max_examples=max(minimum, int(EXAMPLES * share)))


def fuzz_timeout(seconds_per_example: float, share: float = 1.0) -> float:
    """A pytest-timeout budget that grows with the number of inputs (the default 120 s is for one test),
    plus the five minutes hypothesis may spend shrinking a failure: generous, it is there to stop a hang."""
    return 420 + EXAMPLES * share * seconds_per_example


# What each target ran (test-body calls, shrinking included); printed at the end by tests/fuzz/conftest.py.
COUNTS: collections.Counter[str] = collections.Counter()


def tally(target: str) -> None:
    COUNTS[target] += 1


# -- MsgPack values ----------------------------------------------------------------------------------------

EDGE_INTS = [0, 1, -1, 127, 128, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
EDGE_INTS += [-(2**31), -(2**63)]
ints = st.integers(-(2**63), 2**64 - 1) | st.sampled_from(EDGE_INTS)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e308, 5e-324])
text = st.text(max_size=24) | st.sampled_from(["", "@", "*", "a", "é", "\x00", "null", "🙂" * 3])
scalars = st.none() | st.booleans() | ints | floats | text | st.binary(max_size=32)
keys = text | ints | st.booleans() | st.binary(max_size=8) | st.none()


@functools.cache  # building a strategy costs more than drawing from it
def values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any MsgPack-able value: scalars, lists and maps (with non-string keys too)."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=max_leaves,
    )


def packed(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda value: msgpack.packb(value, use_bin_type=True))


# -- envelope maps -----------------------------------------------------------------------------------------

STRING_FIELDS = ["id", "to", "from", "reply_to", "cid", "trace_id", "trace_path", "span_id", "obj_type"]
ENVELOPE_KEYS = [*STRING_FIELDS, "status", "headers", "body", "exec_time", "round_trip", "tags"]
ENVELOPE_KEYS += ["annotations", "exception"]
COMPACT_KEYS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "T", "R", "F", "S", "H", "B", "t", "p", "X", "z"]

str_maps = st.dictionaries(text, text | ints | floats | st.booleans(), max_size=4)
annotation_maps = st.dictionaries(text, values(6), max_size=3)


@functools.cache
def right_value(key: str, strings: st.SearchStrategy[str] = text) -> st.SearchStrategy[Any]:
    """A value of the right type for an envelope field (descriptive key)."""
    if key in STRING_FIELDS:
        return strings
    if key == "status":
        return st.integers(100, 599) | ints
    if key in ("exec_time", "round_trip"):
        return floats | ints
    if key in ("headers", "tags"):
        return str_maps
    if key == "annotations":
        return annotation_maps
    if key == "exception":
        return text | st.binary(max_size=16)
    return values()  # the body


@functools.cache
def field_value(key: str, strings: st.SearchStrategy[str] = text) -> st.SearchStrategy[Any]:
    """Mostly the right type, sometimes anything at all."""
    return st.one_of(right_value(key, strings), right_value(key, strings), values(6))


_compact_keys = st.lists(st.sampled_from(COMPACT_KEYS) | st.text(min_size=1, max_size=1), max_size=8)
_envelope_keys = st.lists(st.sampled_from(ENVELOPE_KEYS), max_size=10, unique=True)


@st.composite
def envelope_maps(
    draw: st.DrawFn, strings: st.SearchStrategy[str] = text, to: st.SearchStrategy[str] | None = None
) -> dict[Any, Any]:
    """A descriptive envelope map (right and wrong types, unknown keys) or an older compact one."""
    if draw(st.integers(0, 9)) == 0:  # the compact format: single-character keys
        chosen = draw(_compact_keys)
        compact = {"T": "to", "R": "reply_to", "S": "status", "H": "headers", "B": "body", "X": "cid"}
        return {k: draw(field_value(compact.get(k, "body"), strings)) for k in chosen}
    chosen = draw(_envelope_keys)
    result: dict[Any, Any] = {}
    if to is not None and draw(st.integers(0, 3)) > 0:
        result["to"] = draw(to)
    for key in chosen:
        result[key] = draw(_optional(field_value(key, strings))) if key != "to" or to is None else draw(to)
    for _ in range(draw(st.integers(0, 2))):  # unknown keys are ignored
        result[draw(keys)] = draw(values(4))
    return result


@st.composite
def valid_envelopes(draw: st.DrawFn, strings: st.SearchStrategy[str] = text) -> EventEnvelope:
    optional = _optional(strings)
    return EventEnvelope(
        draw(optional),
        draw(values()),
        draw(_headers),
        id=draw(st.text(min_size=1, max_size=20)),  # not a fresh id: the same draw must give the same bytes
        status=draw(st.integers(100, 599)),
        sender=draw(optional),
        reply_to=draw(optional),
        cid=draw(optional),
        trace_id=draw(optional),
        trace_path=draw(optional),
        exec_time=draw(st.none() | st.floats(0, 1e6)),
        tags=draw(st.none() | _headers),
        annotations=draw(st.none() | annotation_maps),
    )


@functools.cache
def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_headers = st.dictionaries(text, text, max_size=3)


# -- raw MsgPack: what msgpack.packb cannot produce -------------------------------------------------------


def raw_str(data: bytes) -> bytes:
    """A MsgPack str of these bytes as they are (invalid UTF-8 included)."""
    n = len(data)
    if n < 32:
        return bytes([0xA0 | n]) + data
    if n < 256:
        return b"\xd9" + bytes([n]) + data
    return b"\xda" + n.to_bytes(2, "big") + data


def raw_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(k + v for k, v in pairs)


INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"a\x80b"]
)


@st.composite
def invalid_utf8_maps(draw: st.DrawFn) -> bytes:
    """An envelope map where a key or a value is a str that is not UTF-8."""
    pairs = []
    for key in draw(st.lists(st.sampled_from(ENVELOPE_KEYS), min_size=1, max_size=5, unique=True)):
        k = raw_str(key.encode())
        if draw(st.booleans()):
            v = raw_str(draw(st.binary(max_size=4)) + draw(INVALID_UTF8))
        else:
            v = msgpack.packb(draw(right_value(key)), use_bin_type=True)
        pairs.append((k, v))
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), (raw_str(draw(INVALID_UTF8)), b"\xc0"))
    return raw_map(pairs)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """A body nested up to thousands deep (arrays or maps), in an envelope map or alone."""
    depth = draw(st.integers(0, 3000) | st.sampled_from([127, 128, 511, 512, 1023, 1024, 1025]))
    opener = draw(st.sampled_from([b"\x91", b"\x81\xa1k", b"\x81\x00"]))
    body = opener * depth + draw(st.sampled_from([b"\xc0", b"\x90", b"\x80", b"\xa0"]))
    if draw(st.booleans()):
        return body
    return raw_map([(raw_str(b"to"), raw_str(b"fuzz.echo")), (raw_str(b"body"), body)])


LYING_HEADERS = [
    b"\xdb\xff\xff\xff\xff",  # str 32 of 4 GB
    b"\xc6\xff\xff\xff\xff",  # bin 32 of 4 GB
    b"\xdd\xff\xff\xff\xff",  # array 32 of 4 G items
    b"\xdf\xff\xff\xff\xff",  # map 32 of 4 G pairs
    b"\xde\xff\xff",
    b"\xdc\xff\xff",
    b"\xc9\xff\xff\xff\xff\x01",  # ext 32
    b"\xc1",  # never used
    b"\xd4\xff",  # fixext 1, truncated
    b"\xd6\xff\x00\x00\x00\x00",  # a timestamp
]


@st.composite
def lying_lengths(draw: st.DrawFn) -> bytes:
    """Lengths that promise far more than follows, reserved bytes, extension types, inside or alone."""
    head = draw(st.sampled_from(LYING_HEADERS))
    tail = draw(st.binary(max_size=16))
    if draw(st.booleans()):
        return head + tail
    return raw_map([(raw_str(b"body"), head + tail)])


ext_envelopes = st.builds(
    lambda code, data, key: msgpack.packb({"to": "fuzz.echo", key: msgpack.ExtType(code, data)}),
    st.integers(0, 127),  # negative codes (the timestamp) come in LYING_HEADERS
    st.binary(max_size=16),
    st.sampled_from(["body", "headers", "to", "status", "annotations"]),
)


@st.composite
def truncated(draw: st.DrawFn, whole: st.SearchStrategy[bytes]) -> bytes:
    data = draw(whole)
    return data[: draw(st.integers(0, max(0, len(data) - 1)))]


@st.composite
def mutated(draw: st.DrawFn, whole: st.SearchStrategy[bytes]) -> bytes:
    """A few bytes of a good record replaced, inserted or removed."""
    data = bytearray(draw(whole))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif where < len(data):
            del data[where]
    return bytes(data)


@functools.cache
def wire_bytes(strings: st.SearchStrategy[str] = text) -> st.SearchStrategy[bytes]:
    """Bytes for a decoder: garbage, MsgPack of any shape, envelope maps, and broken good envelopes."""
    good = valid_envelopes(strings).map(encode)
    maps = packed(envelope_maps(strings))
    return st.one_of(
        st.binary(max_size=64),
        packed(values()),
        maps,
        good,
        truncated(good),
        truncated(maps),
        mutated(good),
        invalid_utf8_maps(),
        deep_nesting(),
        lying_lengths(),
        ext_envelopes,
    )


# -- placeholders for values only known at run time (an app's origin, its inbox) --------------------------


def substitute(value: Any, table: dict[str, str]) -> Any:
    """`value` with every string that names a placeholder (in `table`) replaced, at any depth."""
    if isinstance(value, str):
        for placeholder, actual in table.items():
            if placeholder in value:
                value = value.replace(placeholder, actual)
        return value
    if isinstance(value, list):
        return [substitute(v, table) for v in value]
    if isinstance(value, dict):
        return {substitute(k, table): substitute(v, table) for k, v in value.items()}
    return value


class Blob(bytes):
    """Filler bytes that print as their length (a failing input with 8 KB of zeros stays readable)."""

    def __repr__(self) -> str:
        return f"Blob({len(self)})"


def zeros(size: int) -> Blob:
    return Blob(bytes(size))


def describe(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# -- an app of the mesh, in process ------------------------------------------------------------------------

MAX_EVENT_BYTES = 8192  # small, so that segments past the maximum are easy to make
SEGMENT_SIZE = 1024
TOPIC_A, TOPIC_B = "multiplex.0001-000", "multiplex.0001-001"
ROUTES = ["fuzz.echo", "fuzz.yield", "fuzz.sync", "fuzz.private", "fuzz.fail"]


class Errors(logging.Handler):
    """ERROR records of any logger, and what the event loop reports (a task exception nobody retrieved)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        where = f"{record.pathname}:{record.lineno}"
        self.seen.append(f"{record.name} ({where}): {record.getMessage()}\n{record.exc_text or ''}")

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self.seen.append(f"event loop: {context.get('message')}\n{trace}")

    def take(self) -> list[str]:
        new, self.seen = self.seen, []
        return new


@contextlib.contextmanager
def event_loop() -> Iterator[tuple[asyncio.Runner, Errors]]:
    """A loop of the test's own (inputs run in it one by one) and the errors logged meanwhile.

    The loggers of meshkit and the presence monitor are turned down to ERROR: thousands of inputs log
    thousands of well-deserved "skipped a record" warnings, and only errors are of interest here.
    """
    errors = Errors()
    quiet = [logging.getLogger(name) for name in ("meshkit", "presence_server")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    logging.getLogger().addHandler(errors)
    try:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.get_loop().set_exception_handler(errors.loop_exception)
            yield runner, errors
    finally:
        logging.getLogger().removeHandler(errors)
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


@dataclass
class MeshApp:
    platform: Platform
    node: MeshNode
    connector: MemoryConnector


def mesh_config(**extra: str) -> AppConfig:
    overrides = {"segment.size": str(SEGMENT_SIZE), "max.event.size": str(MAX_EVENT_BYTES), **extra}
    return AppConfig.load(argv=[], environ={}, overrides=overrides)


async def start_mesh_app(
    broker: MemoryBroker, name: str, functions: list[FunctionSpec], topic: str, peers: Sequence[MeshApp] = ()
) -> MeshApp:
    """A mesh node as MeshNode.start makes it, its virtual topic given rather than asked of a monitor, and
    vouched for to `peers` (and they to it) as a monitor would."""
    platform = Platform(mesh_config(), name=name, functions=functions)
    await platform.start()
    connector = MemoryConnector(broker)
    node = MeshNode(platform, connector)
    for peer in peers:
        peer.node._on_notice({"type": "member", "origin": platform.origin, "key": node.identity.public_key})
    await connector.start()
    await connector.ensure_topic(MONITOR_TOPIC, node.groups + 1)
    await node.transport.listen_shared(MONITOR_TOPIC, node.group)
    platform.remote = node.router
    platform.on_route_change(node._route_changed)
    await node._on_ready(
        topic, "fuzz-monitor", {p.platform.origin: p.node.identity.public_key for p in peers}
    )
    return MeshApp(platform, node, connector)


async def stop_mesh_app(app: MeshApp) -> None:
    if app.node._tasks:
        await asyncio.wait(app.node._tasks, timeout=2.0)
    app.platform.remote = None
    await app.node.transport.close()
    await app.connector.close()
    await app.platform.stop()


def busy_pools(platform: Platform) -> dict[str, tuple[int, int]]:
    """route -> (busy instances, backlog) for every function that has either."""
    found = {}
    for spec in platform.functions():
        pool = platform.pool(spec.route)
        if pool is not None and (pool.busy or pool.queue_depth):
            found[spec.route] = (pool.busy, pool.queue_depth)
    return found


async def settle(platform: Platform, timeout: float = 5.0) -> None:
    """Let the loop run until no function of `platform` is busy or has a backlog (a stuck worker fails)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for _ in range(4):
            await asyncio.sleep(0)
        busy = busy_pools(platform)
        if not busy:
            return
        if loop.time() > deadline:
            raise AssertionError(f"workers still busy {timeout} s after the input: {busy} (busy, backlog)")
        await asyncio.sleep(0.001)


# -- mesh strategies: addresses, topics, control messages --------------------------------------------------

# Placeholders filled in when an input is used: "$SELF" is the app's origin ("@$SELF" its reply inbox),
# "$MONITOR" the monitor's id.
OTHER_ORIGIN = "20260101" + "0123456789abcdef" * 2
ADDRESSES = st.one_of(
    st.sampled_from(
        [
            *ROUTES,
            "fuzz.echo@$SELF",
            "fuzz.private@$SELF",
            f"fuzz.echo@{OTHER_ORIGIN}",
            "@$SELF",
            f"@{OTHER_ORIGIN}",
            "@*",
            "@",
            "",
            "$SELF",
            "nobody.here",
            "cloud.connector.health",
        ]
    ),
    text,
)
TOPICS = st.one_of(
    st.sampled_from(
        [
            TOPIC_A,
            TOPIC_B,
            "multiplex.0001-031",
            "multiplex.0009-031",
            "multiplex.0010-000",
            "multiplex.0001-032",
            "multiplex.0000-000",
            "multiplex.0001",
        ]
    ),
    text,
)
ORIGINS = st.sampled_from(["$SELF", OTHER_ORIGIN, "20260101" + "f" * 32, "*"]) | text
CONTROL_KEYS = ["origin", "name", "version", "personality", "topic", "routes", "add", "remove", "id", "sig"]


@st.composite
def control_messages(draw: st.DrawFn) -> Any:
    """What peers say on the control channel (join, peer, leave, routes, loopback), right and wrong."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values(4))  # not a map at all
    message: dict[Any, Any] = {"type": draw(_control_kinds)} if draw(st.integers(0, 9)) else {}
    for key in draw(_control_keys):
        strategy = _control_fields.get(key, text)
        message[key] = draw(_or_anything(strategy)) if draw(st.integers(0, 5)) == 0 else draw(strategy)
    return message


_control_kinds = st.sampled_from(["join", "peer", "leave", "routes", "loopback", "claim", ""]) | values(1)
_control_keys = st.lists(st.sampled_from(CONTROL_KEYS), max_size=8, unique=True)
_route_lists = st.lists(ADDRESSES, max_size=4)
_control_fields = {"origin": ORIGINS, "topic": TOPICS, "routes": _route_lists, "add": _route_lists}
_control_fields["remove"] = _route_lists


@functools.cache
def _or_anything(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | values(2)
