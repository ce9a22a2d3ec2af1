"""Target 4, ``POST /api/event`` on a real server: ``tests/apps/http_target.py`` under ``meshkit run``.

One server for the module, one persistent client session. Bodies: garbage, MsgPack of any shape, envelope
maps (right and wrong types, compact ones) and good envelopes for the app's fast routes, now and then one
past ``max.event.size``. Headers: ``x-ttl``, ``x-async``, ``content-type``, the mesh key, trace headers and
others, of any (legal) value.

Every answer is an envelope (``application/octet-stream``) with an HTTP status from the contract:
200 (the handler's own status inside, 500 there only when a handler failed), 202 for drop-and-forget,
400/401/403/404/408/413/503 refusals whose envelope carries the same status. Nothing else: a 5xx from the
server itself is a crash. Afterwards the server still answers ``/health`` and an ordinary echo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from meshkit import CodecError, EventEnvelope, decode, encode
from tests.fuzz import (
    Blob,
    describe,
    envelope_maps,
    fuzz_settings,
    fuzz_timeout,
    tally,
    text,
    valid_envelopes,
    wire_bytes,
)
from tests.support.servers import UvicornProcess

pytestmark = pytest.mark.timeout(fuzz_timeout(0.1))

MAX_EVENT_SIZE = 16 * 1024
MESH_KEY = "fuzz-key-1"
OCTET_STREAM = "application/octet-stream"
REFUSALS = {400, 401, 403, 404, 408, 413, 503}

# The app's routes that answer at once (test.slow sleeps 3 s, test.recorded grows with every run).
FAST_ROUTES = ["test.echo", "test.secret", "test.conflict", "test.crash", "test.greeting", "test.forward"]
TARGETS = st.one_of(
    st.sampled_from(FAST_ROUTES),
    st.sampled_from(FAST_ROUTES).map(lambda route: route + "@" + "20260101" + "0" * 32),
    st.sampled_from(["test.slow", "test.recorded"]).map(lambda route: route + ".not"),
    st.sampled_from(["", "@", "@20260101" + "1" * 32, "nobody.here", "cloud.connector.health", "TEST.ECHO"]),
    text,
)

# -- headers -------------------------------------------------------------------------------------------------

# what h11 lets a client send: visible ASCII and obs-text, spaces inside
_VALUE_CHARS = st.characters(
    codec="latin-1", categories=["L", "N", "P", "S", "Zs"], exclude_characters="\x7f"
)
header_values = st.text(_VALUE_CHARS, max_size=40).map(str.strip)
# names that frame the request itself (a client that lies about those gets a 400 from uvicorn, not the app)
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te", "trailer"}
header_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=20).filter(
    lambda name: name not in FRAMING and name != "keep-alive"
)

TTLS = st.one_of(
    st.integers(-(10**18), 10**18).map(str),
    st.integers(0, 5000).map(str),
    st.sampled_from(["", "1e3", "1000.0", "0x10", "-0", "+5", "1_000", "nan", "inf", "²", "\xb9"]),
    header_values,
)
ASYNC = st.sampled_from(["true", "TRUE", "True", "false", "1", "yes", ""]) | header_values
CONTENT_TYPES = (
    st.sampled_from(
        [OCTET_STREAM, "application/json", "text/plain; charset=utf-8", "multipart/form-data; boundary=x", ""]
    )
    | header_values
)
TRACE_IDS = st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "x" * 32, ""]) | header_values
TRACEPARENTS = st.one_of(
    st.sampled_from(
        [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ]
    ),
    st.tuples(st.text("0123456789abcdefABCDEF-", max_size=40)).map(lambda t: "00-" + t[0]),
    header_values,
)
KEYS = st.sampled_from([MESH_KEY] * 8 + ["", "fuzz-key-2", "FUZZ-KEY-1"]) | header_values


@st.composite
def request_headers(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, strategy in (
        ("x-ttl", TTLS),
        ("x-async", ASYNC),
        ("content-type", CONTENT_TYPES),
        ("x-trace-id", TRACE_IDS),
        ("traceparent", TRACEPARENTS),
    ):
        if draw(st.integers(0, 3)) == 0:
            headers[name] = draw(strategy)
    if draw(st.integers(0, 9)):
        headers["x-mesh-key"] = draw(KEYS)
    for _ in range(draw(st.integers(0, 2))):
        headers[draw(header_names)] = draw(header_values)
    return headers


# -- bodies --------------------------------------------------------------------------------------------------


@st.composite
def good_envelopes(draw: st.DrawFn) -> bytes:
    event = draw(valid_envelopes())
    event.to = draw(st.sampled_from(FAST_ROUTES))
    if event.to == "test.greeting" and draw(st.booleans()):
        event.body = {"name": draw(text), "count": draw(st.integers(-(2**63), 2**63 - 1))}
    return encode(event)


def encode_map(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


BODIES = st.one_of(
    wire_bytes(),
    envelope_maps(to=TARGETS).map(encode_map),
    good_envelopes(),
    good_envelopes(),
    st.integers(MAX_EVENT_SIZE - 64, MAX_EVENT_SIZE + 4096).map(lambda n: Blob(b"\x81\xa2to" + bytes(n))),
)


# -- the server ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornProcess]:
    properties = {"max.event.size": str(MAX_EVENT_SIZE), "mesh.api.key": MESH_KEY, "log.level": "error"}
    with UvicornProcess("tests.apps.http_target:app", properties=properties) as process:
        yield process


def post(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST /api/event; once more on a new connection when the first fails in transport (the server may
    close an idle keep-alive connection just as it is reused): a second failure is the server's."""
    wire = {k: v.encode("latin-1") for k, v in headers.items()}
    try:
        return client.post("/api/event", content=body, headers=wire)
    except httpx.LocalProtocolError:
        raise  # a request h11 would not send: the test's own mistake
    except httpx.TransportError:
        pass
    try:
        return client.post("/api/event", content=body, headers=wire)
    except httpx.TransportError as exc:
        raise AssertionError(f"no HTTP answer, twice: {exc!r}") from exc


def check_answer(response: httpx.Response, headers: dict[str, str]) -> str | None:
    """What is wrong with an answer of /api/event, or None."""
    status = response.status_code
    if status not in {200, 202} | REFUSALS:
        return f"HTTP {status} outside the contract: {response.content[:300]!r}"
    if response.headers.get("content-type") != OCTET_STREAM:
        return f"HTTP {status} with content-type {response.headers.get('content-type')!r}"
    try:
        reply = decode(response.content)
    except CodecError as exc:
        return f"HTTP {status} with an answer that is not an envelope: {exc}"
    if (headers.get("x-mesh-key") == MESH_KEY) == (status == 401):
        return f"HTTP {status} for mesh key {headers.get('x-mesh-key')!r}"
    if status in REFUSALS and reply.status != status:
        return f"HTTP {status} with an envelope of status {reply.status}: {reply.body!r}"
    if status == 202 and not (isinstance(reply.body, dict) and reply.body.get("type") == "async"):
        return f"HTTP 202 without the async ack: {reply.body!r}"
    if status == 200 and reply.status >= 500 and reply.exception is None:
        return f"HTTP 200 with an envelope of status {reply.status} but no handler failure: {reply.body!r}"
    return None


def test_api_event_answers_every_request_with_an_envelope(server: UvicornProcess) -> None:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:

        @fuzz_settings()
        @given(BODIES, request_headers())
        def one_input(body: bytes, headers: dict[str, str]) -> None:
            assume(not odd_trace_id(body))  # test_api_event_trace_id_of_any_text: a known failure, apart
            tally("4 POST /api/event")
            response = post(client, bytes(body), headers)
            problem = check_answer(response, headers)
            assert problem is None, f"{problem}\nbody {describe(body, 600)}\nheaders {headers!r}"

        one_input()

        assert client.get("/health").status_code == 200
        reply = client.post(
            "/api/event",
            content=encode(EventEnvelope("test.echo", {"after": "the fuzz"})),
            headers={"x-mesh-key": MESH_KEY},
        )
        assert reply.status_code == 200 and decode(reply.content).body == {"after": "the fuzz"}
    assert server.running
    log = server.log_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, server.log_tail(6000)


def odd_trace_id(body: bytes) -> bool:
    """An envelope whose trace_id is not printable ASCII (what fails in test_api_event_trace_id_of_any_text,
    kept out of the broad test so that it goes on finding other failures)."""
    try:
        trace_id = decode(body).trace_id
    except CodecError:
        return False
    return trace_id is not None and not all(" " <= c <= "~" for c in trace_id)


def test_api_event_trace_id_of_any_text(server: UvicornProcess) -> None:
    """The envelope's trace_id is any string (a caller's, or a Mercury app's): the answer is still an
    envelope, with or without x-async."""
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:

        @fuzz_settings(share=0.2)
        @given(text, st.booleans())
        @example("\u0100", False)  # HTTP 500: UnicodeEncodeError putting it in the X-Trace-Id header
        @example("\x1f", True)  # no answer at all: uvicorn drops the connection ("Invalid HTTP header value")
        def one_input(trace_id: str, drop_and_forget: bool) -> None:
            tally("4 POST /api/event trace_id")
            headers = {"x-mesh-key": MESH_KEY, **({"x-async": "true"} if drop_and_forget else {})}
            event = encode(EventEnvelope("test.echo", "traced", trace_id=trace_id))
            problem = check_answer(post(client, event, headers), headers)
            assert problem is None, f"{problem}\ntrace_id {trace_id!r}, headers {headers!r}"

        one_input()


# -- x-ttl: any number ---------------------------------------------------------------------------------------


# d * 10**k for k up to 450 digits (shrinks to the shortest number that fails), either sign
POWERS_OF_TEN = st.builds(
    lambda d, k, minus: (-1 if minus else 1) * d * 10**k,
    st.integers(1, 9),
    st.integers(0, 450),
    st.booleans(),
)


def test_x_ttl_any_number(server: UvicornProcess) -> None:
    """x-ttl is milliseconds (floor 1000): any integer is a ttl (a long one is fine: the echo answers at
    once), anything else a 400."""
    # the echo answers at once: a ttl that made the server wait ends in httpx's timeout, a failure
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        event = encode(EventEnvelope("test.echo", "ttl"))

        @fuzz_settings(share=0.2)
        @given(st.integers(-(10**20), 10**20) | POWERS_OF_TEN | st.floats().map(str))
        @example(10**312)  # HTTP 500: OverflowError in ttl_ms / 1000
        def one_input(ttl: int | str) -> None:
            tally("4 POST /api/event x-ttl")
            headers = {"x-ttl": str(ttl), "x-mesh-key": MESH_KEY}
            response = post(client, event, headers)
            problem = check_answer(response, headers)
            assert problem is None, f"{problem}\nx-ttl {ttl!r}"
            assert response.status_code in (200, 400), f"HTTP {response.status_code} for x-ttl {ttl!r}"

        one_input()
