"""Target 5, the presence websocket of a real monitor: ``presence_server.main:app`` under ``meshkit run``.

The monitor runs with ``cloud.connector=none`` (its partition-0 log in memory, inside its own process): the
websocket is the target here, the Kafka side is target 3. Each input is one connection: an origin in the path
(good, malformed, hostile), a first frame (a hello good or bad, other JSON, text, binary, nothing at all,
or a hello and gone at once) and, once served, a few more frames of any kind.

Each connection ends clearly: the handshake is refused, or the monitor answers ``error`` and closes with a
code, or it answers ``ready`` (always, for a well-formed hello from a good origin) and keeps serving (a ping
still gets its pong after the extra frames). The monitor logs no traceback for any of it. Afterwards it still
answers /health and /info, still hands a hello its ``ready``, and its heartbeat still goes on.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from tests.fuzz import fuzz_settings, fuzz_timeout, tally, text
from tests.support.identities import PUBLIC_KEY
from tests.support.servers import UvicornProcess

SHARE = 0.2  # a connection costs a few milliseconds: a fifth of the inputs of the other targets
pytestmark = pytest.mark.timeout(fuzz_timeout(0.5, SHARE))

CLEAR_CLOSE_CODES = {1000, 1001, 1008, 1011, 1013, 4000, 4401, 4403}
_fresh = itertools.count(1)


def fresh_origin() -> str:
    """A well-formed origin no other input uses (each served app must be a new one)."""
    return f"20260101{time.monotonic_ns() % 10**9:09d}{next(_fresh):023x}"


# -- inputs --------------------------------------------------------------------------------------------------

BAD_ORIGINS = st.one_of(
    st.sampled_from(
        [
            "2026010" + "a" * 33,
            "20260101" + "A" * 32,
            "20260101" + "a" * 31,
            "20260101" + "a" * 33,
            "20260101" + "g" * 32,
            "x" * 5000,
            "..",
            "%00",
            " 20260101" + "a" * 32,
            "20260101" + "a" * 32 + "\n",
        ]
    ),
    # ASCII: an origin of other characters is test_presence_websocket_non_ascii_origin's, a known failure
    st.text(st.characters(max_codepoint=127)),
)
NON_ASCII_ORIGINS = st.one_of(
    st.text(st.characters(min_codepoint=0xA1, categories=["L", "N", "S"]), min_size=24),  # printable
    st.text(min_size=1).filter(lambda origin: not origin.isascii()),
)
ISO = st.sampled_from(["2026-01-01T00:00:00.000Z", "2026-11-25T10:00:00.000+01:00", "2026-01-01T00:00:00"])
GOOD_HELLOS = st.fixed_dictionaries(
    {
        "type": st.just("hello"),
        "name": st.text(min_size=1, max_size=30),
        "version": st.sampled_from(["1.0.0", "2.1"]),
        "personality": st.sampled_from(["APP", "REST", "RESOURCES"]),
        "group": st.integers(1, 10),
        "created": ISO,
        "key": st.just(PUBLIC_KEY),
    },
    optional={"topic": st.none() | st.sampled_from(["multiplex.0001-003", "multiplex.0002-000"])},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
long_text = st.text(min_size=190, max_size=260)
TOPIC_NAMES = st.sampled_from(["multiplex.0001-003", "multiplex.0009-031", "multiplex.0010-000"])
BAD_HELLOS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["hello", "hello", "HELLO", "alive"]) | json_scalar,
        "name": text | long_text | json_values,
        "version": text | json_scalar,
        "personality": text | long_text | json_scalar,
        "group": st.integers(-1, 12) | st.integers() | st.floats(allow_nan=False) | st.booleans() | text,
        "created": ISO | text | json_scalar,
        "key": st.just(PUBLIC_KEY) | text | json_scalar,
        "topic": TOPIC_NAMES | json_values,
        "origin": text,
    },
)
ALIVES = st.fixed_dictionaries(
    {"type": st.sampled_from(["alive", "alive", "hello"]) | text},
    optional={"seq": st.integers(0, 10**6) | st.integers() | text | st.none()},
)


@dataclass
class Frame:
    kind: str  # "text" or "bytes"
    data: str | bytes

    def __repr__(self) -> str:
        shown = self.data if len(self.data) < 300 else self.data[:300]
        return f"Frame({self.kind}, {shown!r}{'...' if shown is not self.data else ''})"


def text_frame(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Frame]:
    return strategy.map(lambda value: Frame("text", json.dumps(value)))


FRAMES = st.one_of(
    text_frame(ALIVES),
    text_frame(ALIVES),
    text_frame(json_values),
    text_frame(BAD_HELLOS),
    text.map(lambda s: Frame("text", s)),
    st.binary(max_size=64).map(lambda b: Frame("bytes", b)),
)


@dataclass
class Visit:
    """One connection: the origin in the path, the first frame, what follows, or when the app vanishes."""

    origin: str
    well_formed_origin: bool
    first: Frame
    well_formed_hello: bool
    then: list[Frame]
    vanishes: str | None = None  # "before its hello" or "after its first frame": the client just closes
    actual_origin: str = ""  # a "fresh" origin, once made


def known_visit(origin: str, vanishes: str | None = None) -> Visit:
    """A well-formed hello from `origin` ("fresh": a good one): the explicit examples of failures found."""
    hello = {"type": "hello", "name": "0", "version": "1.0.0", "personality": "APP", "group": 1}
    first = Frame("text", json.dumps({**hello, "created": "2026-01-01T00:00:00.000Z", "key": PUBLIC_KEY}))
    return Visit(origin, origin == "fresh", first, True, [], vanishes)


@st.composite
def visits(draw: st.DrawFn, vanishes: str | None = None) -> Visit:
    good_origin = draw(st.integers(0, 4)) > 0
    origin = "fresh" if good_origin else draw(BAD_ORIGINS)
    choice = draw(st.integers(0, 19))
    if choice <= 9:
        first, well_formed = draw(text_frame(GOOD_HELLOS)), True
    elif choice <= 14:
        first, well_formed = draw(text_frame(BAD_HELLOS)), False
    else:
        first, well_formed = draw(FRAMES), False
    then = [] if vanishes else draw(st.lists(FRAMES, max_size=4))
    return Visit(origin, good_origin, first, well_formed, then, vanishes)


# -- the monitor ---------------------------------------------------------------------------------------------


class LogTail:
    """What the server wrote since the last call (read from where the last call stopped)."""

    def __init__(self, server: UvicornProcess) -> None:
        self.server = server
        self.offset = 0

    def new(self) -> str:
        path: Path | None = getattr(self.server, "_log_path", None)
        if path is None or not path.exists():
            text = self.server.log_text()
            chunk, self.offset = text[self.offset :], len(text)
            return chunk
        with path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")

    def settle(self, quiet: float = 0.03, timeout: float = 1.0) -> str:
        """What the server writes until it has been quiet for `quiet` seconds (at most `timeout`): what it
        logs about a connection that just ended (every connection logs at least its opening line)."""
        written = self.new()
        started = last = time.monotonic()
        while time.monotonic() - started < timeout:
            time.sleep(0.005)
            more = self.new()
            if more:
                written, last = written + more, time.monotonic()
            elif written and time.monotonic() - last >= quiet:
                break
        return written


CRASH_MARKS = ("Traceback", "Exception in ASGI application", " ERROR ")


@pytest.fixture(scope="module")
def monitor() -> Iterator[UvicornProcess]:
    properties = {"cloud.connector": "none", "monitor.heartbeat": "0.2"}
    with UvicornProcess("presence_server.main:app", properties=properties) as process:
        yield process


def ws_url(server: UvicornProcess, origin: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/presence/{urllib.parse.quote(origin, safe='')}"


def send(ws: ClientConnection, frame: Frame) -> None:
    """Send a frame; a monitor that already refused and closed is not an error here (its answer is read
    next, from what arrived before the close)."""
    try:
        ws.send(frame.data)
    except ConnectionClosed:
        pass


def answer_of(ws: ClientConnection) -> dict[str, Any] | None:
    """The monitor's first answer as JSON; None when it closed with a code and no answer."""
    try:
        message = ws.recv(timeout=10)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        assert code in CLEAR_CLOSE_CODES, f"closed without an answer or a clear code: {exc!r}"
        return None
    assert isinstance(message, str), f"a binary answer: {message!r}"
    answer = json.loads(message)
    assert isinstance(answer, dict) and answer.get("type") in ("ready", "error"), f"answer {answer!r}"
    return answer


def expect_close(ws: ClientConnection) -> None:
    try:
        extra = ws.recv(timeout=10)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        assert code in CLEAR_CLOSE_CODES, f"refused, then closed without a clear code: {exc!r}"
        return
    raise AssertionError(f"refused, then sent {extra!r} instead of closing")


def visit(server: UvicornProcess, case: Visit) -> str:
    """One connection; what happened ("handshake refused", "refused: ...", "served", ...)."""
    origin = case.actual_origin = fresh_origin() if case.origin == "fresh" else case.origin
    try:
        with connect(ws_url(server, origin), open_timeout=10, close_timeout=5, max_size=1 << 20) as ws:
            return talk(ws, case)
    except InvalidHandshake as exc:
        assert not case.well_formed_origin, f"a good origin's handshake was refused: {exc!r}"
        return "handshake refused"


def talk(ws: ClientConnection, case: Visit) -> str:
    """The visit once connected: the first frame, the answer, the rest (or the app vanishes)."""
    if case.vanishes == "before its hello":
        return "vanished before its hello"
    send(ws, case.first)
    if case.vanishes is not None:
        return "vanished after its first frame"
    answer = answer_of(ws)
    if case.well_formed_origin and case.well_formed_hello:
        assert answer is not None and answer["type"] == "ready", f"a good hello got {answer!r}"
    if answer is None:
        return "closed"
    if answer["type"] == "error":
        assert isinstance(answer.get("message"), str), answer
        expect_close(ws)
        return "refused"
    assert isinstance(answer.get("topic"), str) and answer["topic"].startswith("multiplex."), answer
    for frame in case.then:
        send(ws, frame)
    assert ws.ping().wait(10), "served, then no pong for a ping after the extra frames"
    return "served"


def fuzz_visits(
    monitor: UvicornProcess, name: str, share: float, cases: st.SearchStrategy[Visit], *known: Visit
) -> dict[str, int]:
    """Run the visits (the `known` failures first); how many ended in each way."""
    log = LogTail(monitor)
    log.new()
    outcomes: dict[str, int] = {}
    http = httpx.Client(base_url=monitor.url, trust_env=False, timeout=15)

    def one_input(case: Visit) -> None:
        tally(name)
        outcome = visit(monitor, case)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        written = log.settle()
        crashed = [mark for mark in CRASH_MARKS if mark in written]
        leaked = still_held(http, case.actual_origin) if case.vanishes and case.well_formed_origin else None
        assert not crashed and not leaked, (
            f"for {case!r} ({outcome}):\n"
            + (f"{case.actual_origin} is gone but still holds {leaked} 0.5 s later\n" if leaked else "")
            + (f"the monitor logged {crashed}:\n{written[-4000:]}" if crashed else "")
        )

    for case in known:
        one_input = example(case)(one_input)
    with http:
        fuzz_settings(share)(given(cases)(one_input))()
    return outcomes


def still_held(http: httpx.Client, origin: str, timeout: float = 0.5) -> str | None:
    """The virtual topic `origin` still holds `timeout` s after it left (an app that is gone must not keep
    its topic: enough of those and the mesh is full), or None once the monitor no longer lists it."""
    deadline = time.monotonic() + timeout
    while True:
        connections = http.get("/info").json()["additional_info"]["connections"]
        held = [c["topic"] for c in connections if c["origin"] == origin]
        if not held or time.monotonic() > deadline:
            return held[0] if held else None
        time.sleep(0.05)


def test_presence_websocket(monitor: UvicornProcess) -> None:
    outcomes = fuzz_visits(monitor, "5 presence websocket", SHARE, visits())
    print(f"presence websocket outcomes: {outcomes}")
    assert_still_serving(monitor)


def test_presence_websocket_non_ascii_origin(monitor: UvicornProcess) -> None:
    """An origin of any characters in the path: refused with `error` and a clear close (1008)."""
    cases = st.builds(
        Visit,
        origin=NON_ASCII_ORIGINS,
        well_formed_origin=st.just(False),
        first=text_frame(GOOD_HELLOS),
        well_formed_hello=st.just(True),
        then=st.just([]),
    )
    fuzz_visits(
        monitor, "5 presence websocket, non-ASCII origin", SHARE / 4, cases, known_visit("\u00a2" * 34)
    )
    assert_still_serving(monitor)


def test_presence_websocket_app_gone_before_its_hello(monitor: UvicornProcess) -> None:
    """An app that connects and closes at once (it died, or was killed, or is a port scanner)."""
    known = known_visit("fresh", "before its hello")
    fuzz_visits(
        monitor, "5 presence websocket, gone before hello", SHARE / 4, visits("before its hello"), known
    )
    assert_still_serving(monitor)


def test_presence_websocket_app_gone_after_its_hello(monitor: UvicornProcess) -> None:
    """An app that sends its first frame and closes without waiting for the answer."""
    known = known_visit("fresh", "after its first frame")
    cases = visits("after its first frame")
    fuzz_visits(monitor, "5 presence websocket, gone after hello", SHARE / 4, cases, known)
    assert_still_serving(monitor)


def assert_still_serving(monitor: UvicornProcess) -> None:
    """/health, /info, a hello gets its ready, the heartbeat goes on, and no traceback in the whole log."""
    with httpx.Client(base_url=monitor.url, trust_env=False, timeout=15) as http:
        assert http.get("/health").status_code == 200
        info = http.get("/info")
        assert info.status_code == 200 and "connections" in info.json()["additional_info"]
        me = info.json()["origin"]
        with connect(ws_url(monitor, fresh_origin()), open_timeout=10) as ws:
            hello = {"type": "hello", "name": "after", "version": "1", "personality": "APP", "group": 1}
            ws.send(json.dumps({**hello, "created": "2026-01-01T00:00:00.000Z", "key": PUBLIC_KEY}))
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"

        def own_heartbeat() -> str:
            monitors = http.get("/info").json()["additional_info"]["monitors"]
            return next((entry for entry in monitors if entry.startswith(me)), "")

        first = own_heartbeat()
        time.sleep(1.5)  # 7 heartbeats
        assert own_heartbeat() != first, (
            f"the monitor's heartbeat stopped at {first!r}: its housekeeping task has ended "
            "(see test_keepalives_then_housekeeping in test_fuzz_control.py)"
        )
    whole = monitor.log_text()
    assert not [mark for mark in CRASH_MARKS if mark in whole], monitor.log_tail(6000)
