"""Event over HTTP against a real server: ``POST /api/event`` with an envelope, an envelope back.

The exchange is in docs/protocol/envelope.md.

The callee is ``tests/apps/http_target.py`` under ``meshkit run`` in a process of its own. Each status of the
contract is checked twice where it makes sense: on the wire (raw aiohttp, HTTP status + the envelope decoded
with ``meshkit.decode``) and through the caller's API (``PostOffice.request(..., endpoint=url)``), which
turns transport failures into ``AppError`` / ``TimeoutError`` like the in-memory bus does.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgpack
import pytest

from meshkit import AppError, EventEnvelope, Platform, PostOffice, decode, encode
from meshkit.testing import running_platform
from tests.support.eventually import eventually
from tests.support.servers import UvicornProcess, free_port

MAX_EVENT_SIZE = 16 * 1024
ISO_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
OCTET_STREAM = "application/octet-stream"


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornProcess]:
    with UvicornProcess(
        "tests.apps.http_target:app", properties={"max.event.size": str(MAX_EVENT_SIZE)}
    ) as process:
        yield process


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    """The caller: an app of the test's own, with no functions, that reaches the server only over HTTP."""
    async with running_platform([], name="http-caller") as caller:
        yield caller


async def post(
    http: aiohttp.ClientSession, server: UvicornProcess, data: bytes, headers: dict[str, str] | None = None
) -> tuple[int, EventEnvelope]:
    """POST raw bytes to /api/event; the HTTP status and the envelope that came back (always one)."""
    async with http.post(server.event_url, data=data, headers=headers or {}) as response:
        assert response.content_type == OCTET_STREAM
        return response.status, decode(await response.read())


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def wait_until_recorded(http: aiohttp.ClientSession, server: UvicornProcess, marker: str) -> None:
    """Poll test.recorded until `marker` shows up."""
    recorded: list[Any] = []

    async def shown() -> bool:
        _, reply = await post(http, server, encode(EventEnvelope("test.recorded")))
        recorded[:] = reply.body
        return marker in recorded

    await eventually(shown, what=f"{marker!r} recorded", describe=lambda: f"recorded: {recorded}")


# --- 200: a reply -------------------------------------------------------------------------------------------


async def test_200_the_body_and_headers_round_trip(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    body = {
        "text": "hello",
        "number": 42,
        "pi": 3.14,
        "ok": True,
        "items": [1, "two", None],
        "raw": b"\x00\xff",
    }
    event = EventEnvelope(
        "test.echo", body, {"x-user": "alice", "lang": "en"}, trace_id="t-1", trace_path="GET /x"
    )

    status, reply = await post(http, server, encode(event))

    assert status == 200
    assert reply.status == 200
    assert reply.body == body
    assert reply.headers == {
        "x-user": "alice",
        "lang": "en",
        "my_route": "test.echo",
        "my_trace_id": "t-1",
        "my_trace_path": "GET /x",
    }
    assert (reply.trace_id, reply.trace_path) == ("t-1", "GET /x")
    assert reply.sender == "test.echo"
    assert reply.to is None, "the server's own reply inbox must not leak to the caller"
    assert reply.exec_time is not None and reply.exec_time >= 0


async def test_200_the_reply_keeps_the_callers_correlation_id(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    """A Mercury caller matches replies to requests by ``cid``: the reply must carry the request's."""
    status, reply = await post(http, server, encode(EventEnvelope("test.echo", "x", cid="order-42")))

    assert status == 200
    assert reply.cid == "order-42"


async def test_200_a_pydantic_body_is_validated_and_a_model_comes_back_as_a_map(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    status, reply = await post(
        http, server, encode(EventEnvelope("test.greeting", {"name": "bob", "count": 1}))
    )
    assert (status, reply.status, reply.body) == (200, 200, {"name": "hello bob", "count": 2})

    status, reply = await post(http, server, encode(EventEnvelope("test.greeting", {"name": 7})))
    assert (status, reply.status) == (200, 400), "a validation error is the handler's answer, not transport"
    assert reply.body.startswith("Invalid Greeting:")
    assert "count" in reply.body


@pytest.mark.parametrize(
    ("route", "status", "message", "exception"),
    [
        ("test.conflict", 409, "Already exists", "AppError"),
        ("test.crash", 500, "boom", "RuntimeError"),
    ],
)
async def test_200_a_handler_error_rides_http_200_with_the_status_inside_the_envelope(
    http: aiohttp.ClientSession, server: UvicornProcess, route: str, status: int, message: str, exception: str
) -> None:
    http_status, reply = await post(http, server, encode(EventEnvelope(route, "x")))

    assert http_status == 200
    assert (reply.status, reply.body, reply.exception) == (status, message, exception)
    assert reply.is_error


# --- 202: drop and forget -----------------------------------------------------------------------------------


async def test_202_async_event_is_acknowledged_and_really_runs(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    marker = f"async-{uuid.uuid4().hex}"

    status, ack = await post(http, server, encode(EventEnvelope("test.forward", marker)), {"x-async": "true"})

    assert status == 202
    assert set(ack.body) == {"type", "delivered", "time"}
    assert ack.body["type"] == "async"
    assert ack.body["delivered"] is True
    assert ISO_UTC_MS.match(ack.body["time"])
    # test.forward passes the body on to test.record; test.recorded shows what arrived
    await wait_until_recorded(http, server, marker)


@pytest.mark.parametrize(("route", "status"), [("test.secret", 403), ("no.such.route", 404)])
async def test_an_async_event_to_a_route_it_may_not_reach_is_refused_not_acknowledged(
    http: aiohttp.ClientSession, server: UvicornProcess, route: str, status: int
) -> None:
    http_status, reply = await post(http, server, encode(EventEnvelope(route, "x")), {"x-async": "true"})
    assert (http_status, reply.status) == (status, status)


# --- 400: not an event --------------------------------------------------------------------------------------

NOT_EVENTS: dict[str, tuple[bytes, str]] = {
    "garbage bytes": (b"\xc1\xc1\xc1 this is not MsgPack", "Invalid event"),
    "truncated MsgPack": (encode(EventEnvelope("test.echo", "x" * 100))[:-10], "Invalid event"),
    "empty body": (b"", "Invalid event"),
    "a MsgPack list": (msgpack.packb(["test.echo", "hello"]), "Invalid event"),
    "a number as 'to'": (msgpack.packb({"to": 42, "body": "x"}), "'to'"),
    "a list as headers": (msgpack.packb({"to": "test.echo", "headers": ["a"]}), "'headers'"),
    "a map as a header value": (msgpack.packb({"to": "test.echo", "headers": {"a": {"b": 1}}}), "'headers'"),
    "a string as status": (msgpack.packb({"to": "test.echo", "status": "ok"}), "'status'"),
    "an extension type": (msgpack.packb({"to": "test.echo", "body": msgpack.ExtType(1, b"\0")}), "extension"),
    "one-letter keys that are no compact envelope": (msgpack.packb({"x": 1, "y": 2}), "Invalid event"),
    "no 'to'": (encode(EventEnvelope(body="x")), "Missing routing path"),
    "an empty 'to'": (msgpack.packb({"to": "", "body": "x"}), "Missing routing path"),
}


@pytest.mark.parametrize("case", list(NOT_EVENTS))
async def test_400_for_bytes_that_are_not_an_event(
    http: aiohttp.ClientSession, server: UvicornProcess, case: str
) -> None:
    data, reason = NOT_EVENTS[case]

    status, reply = await post(http, server, data)

    assert (status, reply.status) == (400, 400)
    assert reason in reply.body


@pytest.mark.parametrize("ttl", ["soon", "", "1.5s"])
async def test_400_for_an_x_ttl_that_is_not_milliseconds(
    http: aiohttp.ClientSession, server: UvicornProcess, ttl: str
) -> None:
    status, reply = await post(http, server, encode(EventEnvelope("test.echo", "x")), {"x-ttl": ttl})
    assert (status, reply.status) == (400, 400)
    assert "x-ttl" in reply.body


async def test_the_engines_compact_format_is_decoded_or_clearly_refused(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    compact = msgpack.packb({"0": "compact-1", "T": "test.echo", "B": "hi", "H": {"k": "v"}})

    status, reply = await post(http, server, compact)

    if status == 200:
        assert (reply.status, reply.body, reply.headers["k"]) == (200, "hi", "v")
    else:
        assert (status, reply.status) == (400, 400)


async def test_a_refused_event_is_logged_by_the_server(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    status, _ = await post(http, server, b"\xc1 refused-and-logged")
    assert status == 400
    line = server.wait_for_log("refused with 400: Invalid event")
    assert "Event over HTTP from 127.0.0.1" in line


async def test_garbage_does_not_hurt_the_server_or_a_request_in_flight(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    marker = f"in-flight-{uuid.uuid4().hex}"
    slow = EventEnvelope("test.slow", headers={"seconds": "2", "mark": marker})
    in_flight = asyncio.create_task(post(http, server, encode(slow), {"x-ttl": "10000"}))
    await wait_until_recorded(http, server, marker)  # test.slow has started
    for data, _ in NOT_EVENTS.values():
        status, _ = await post(http, server, data)
        assert status == 400
    assert not in_flight.done(), "the slow request should still be running while the garbage arrives"

    status, reply = await in_flight
    assert (status, reply.body) == (200, "done")
    status, health = await get_json(http, server.url + "/health")
    assert (status, health["status"], health["name"]) == (200, "UP", "http-target")
    status, reply = await post(http, server, encode(EventEnvelope("test.echo", "still here")))
    assert (status, reply.body) == (200, "still here")


# --- 403, 404 -----------------------------------------------------------------------------------------------


async def test_403_a_private_route_is_not_reachable_from_outside(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    status, reply = await post(http, server, encode(EventEnvelope("test.secret", "x")))
    assert (status, reply.status, reply.body) == (403, 403, "Route test.secret is private")


@pytest.mark.parametrize("route", ["no.such.route", "nodots"])
async def test_404_an_unknown_route(http: aiohttp.ClientSession, server: UvicornProcess, route: str) -> None:
    status, reply = await post(http, server, encode(EventEnvelope(route, "x")))
    assert (status, reply.status, reply.body) == (404, 404, f"Route {route} not found")


async def test_an_event_from_outside_cannot_pose_as_the_reply_to_a_pending_request(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    """The server's reply inbox (``@<origin>``) is internal: an outsider must not resolve someone's request.

    The origin is on /info and the victim's correlation id may be known to the forger: neither helps, since
    the inbox refuses every event from outside and the server correlates with ids it never shows.
    """
    _, info = await get_json(http, server.url + "/info")
    _, probe = await post(http, server, encode(EventEnvelope("test.echo", "probe", cid="probe-1")))
    assert probe.cid == "probe-1"  # the caller's id comes back; the server's own is never shown
    victim = asyncio.create_task(
        post(
            http,
            server,
            encode(EventEnvelope("test.slow", headers={"seconds": "1"}, cid="victim-1")),
            {"x-ttl": "10000"},
        )
    )
    forged_statuses: set[int] = set()
    while not victim.done():
        for cid in ("victim-1", "probe-1"):
            forged = EventEnvelope("@" + info["origin"], "forged", cid=cid)
            status, _ = await post(http, server, encode(forged), {"x-async": "true"})
            forged_statuses.add(status)
        await asyncio.sleep(0.05)

    status, reply = await victim
    assert (status, reply.body) == (200, "done")
    assert forged_statuses == {403}, "an event addressed to the reply inbox was accepted"


async def test_the_reply_inbox_is_not_an_address_for_outsiders(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    """A request to ``@<origin>`` is refused at once, not parked until its ttl runs out."""
    _, info = await get_json(http, server.url + "/info")

    status, reply = await post(
        http, server, encode(EventEnvelope("@" + info["origin"], "x")), {"x-ttl": "1000"}
    )

    assert status in (400, 403, 404)
    assert reply.status == status


# --- 408 ----------------------------------------------------------------------------------------------------


async def test_408_when_the_function_does_not_answer_within_x_ttl(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    status, reply = await post(
        http, server, encode(EventEnvelope("test.slow", headers={"seconds": "3"})), {"x-ttl": "1000"}
    )
    assert (status, reply.status) == (408, 408)
    assert "test.slow" in reply.body and "timeout" in reply.body


async def test_x_ttl_has_a_floor_of_1000_ms(http: aiohttp.ClientSession, server: UvicornProcess) -> None:
    """x-ttl: 10 would be too short for a 0.3 s function; the server gives it 1 s anyway."""
    status, reply = await post(
        http, server, encode(EventEnvelope("test.slow", headers={"seconds": "0.3"})), {"x-ttl": "10"}
    )
    assert (status, reply.body) == (200, "done")


async def test_x_ttl_is_the_event_s_deadline_for_the_function_and_its_own_requests(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    status, reply = await post(http, server, encode(EventEnvelope("test.time.left")), {"x-ttl": "1500"})
    assert status == 200 and 1.2 < reply.body["left"] <= 1.5, reply.body
    # the envelope's own ttl (a meshkit caller's deadline), when it is the sooner, wins
    event = EventEnvelope("test.time.left")
    event.deadline = time.perf_counter() + 1.1
    status, reply = await post(http, server, encode(event), {"x-ttl": "5000"})
    assert status == 200 and 0.8 < reply.body["left"] <= 1.1, reply.body


# --- 413 ----------------------------------------------------------------------------------------------------


async def test_413_an_event_larger_than_max_event_size(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    big = encode(EventEnvelope("test.echo", "x" * (MAX_EVENT_SIZE + 1)))

    status, reply = await post(http, server, big)

    assert (status, reply.status) == (413, 413)
    assert str(MAX_EVENT_SIZE) in reply.body


async def test_413_also_without_a_content_length(http: aiohttp.ClientSession, server: UvicornProcess) -> None:
    big = encode(EventEnvelope("test.echo", "x" * (MAX_EVENT_SIZE * 2)))

    async def chunks() -> AsyncIterator[bytes]:  # chunked transfer: the server counts as it reads
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    async with http.post(server.event_url, data=chunks()) as response:
        assert response.status == 413
        assert decode(await response.read()).status == 413


async def test_an_event_just_under_the_limit_is_accepted(
    http: aiohttp.ClientSession, server: UvicornProcess
) -> None:
    body = "y" * (MAX_EVENT_SIZE - 200)
    status, reply = await post(http, server, encode(EventEnvelope("test.echo", body)))
    assert (status, reply.body) == (200, body)


# --- the caller's API: PostOffice.request(..., endpoint=url) ------------------------------------------------


async def test_postoffice_request_over_http_returns_the_reply(
    platform: Platform, server: UvicornProcess
) -> None:
    po = PostOffice(platform)

    reply = await po.request("test.echo", {"n": 1}, {"who": "me"}, timeout=5, endpoint=server.event_url)

    assert (reply.status, reply.body) == (200, {"n": 1})
    assert reply.headers["who"] == "me"


async def test_postoffice_returns_a_handler_error_as_a_reply_not_an_exception(
    platform: Platform, server: UvicornProcess
) -> None:
    reply = await PostOffice(platform).request("test.conflict", timeout=5, endpoint=server.event_url)
    assert (reply.status, reply.body) == (409, "Already exists")


@pytest.mark.parametrize(
    ("event", "status", "message"),
    [
        (EventEnvelope("test.secret", "x"), 403, "Route test.secret is private"),
        (EventEnvelope("no.such.route", "x"), 404, "Route no.such.route not found"),
        (EventEnvelope(body="x"), 400, "Missing routing path"),
        (EventEnvelope("test.echo", "x", {"bad": [1, 2]}), 400, "'headers'"),  # type: ignore[dict-item]
        (EventEnvelope("test.echo", "z" * (MAX_EVENT_SIZE + 1)), 413, str(MAX_EVENT_SIZE)),
    ],
    ids=["403 private", "404 unknown", "400 no to", "400 bad header", "413 too large"],
)
async def test_postoffice_raises_apperror_with_the_servers_status(
    platform: Platform, server: UvicornProcess, event: EventEnvelope, status: int, message: str
) -> None:
    with pytest.raises(AppError) as caught:
        await PostOffice(platform).request(event, timeout=5, endpoint=server.event_url)
    assert caught.value.status == status
    assert message in caught.value.message


async def test_postoffice_raises_timeout_error_for_408(platform: Platform, server: UvicornProcess) -> None:
    with pytest.raises(TimeoutError):
        await PostOffice(platform).request(
            "test.slow", headers={"seconds": "3"}, timeout=1.0, endpoint=server.event_url
        )


@pytest.mark.parametrize("answers", ["nothing", "headers only"])
async def test_a_peer_that_never_answers_costs_the_caller_its_timeout_and_no_more(
    platform: Platform, answers: str
) -> None:
    """The caller's own deadline, not the server's: a port that accepts and never replies, or that sends
    its headers and then no body."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        if answers == "headers only":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            await writer.drain()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await PostOffice(platform).request(
                "test.echo", timeout=0.5, endpoint=f"http://127.0.0.1:{port}/api/event"
            )
        assert 0.45 < time.monotonic() - started < 3
    finally:
        for writer in held:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def test_postoffice_gives_a_408_envelope_when_asked(platform: Platform, server: UvicornProcess) -> None:
    reply = await PostOffice(platform).request(
        "test.slow", headers={"seconds": "3"}, timeout=1.0, endpoint=server.event_url, timeout_as_reply=True
    )
    assert reply.status == 408
    assert "timeout" in reply.body


async def test_postoffice_raises_503_when_nobody_listens(platform: Platform) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/api/event"
    with pytest.raises(AppError) as caught:
        await PostOffice(platform).request("test.echo", "x", timeout=5, endpoint=endpoint)
    assert caught.value.status == 503
    assert endpoint in caught.value.message
