"""Event over HTTP with a real Mercury peer: mercury-composable (a dev dependency) on the other side.

- mercury-composable's PostOffice calls a meshkit app (``meshkit run`` in a process of its own) at
  ``POST /api/event``; the meshkit function reports how much of its deadline was left, which ``x-ttl`` sets.
- meshkit's PostOffice calls functions hosted by mercury-composable's ``EventApiServer`` (aiohttp, in this
  process); the envelope meshkit sends carries its ``ttl`` extension key, which Mercury must ignore.

The exchange is in docs/protocol/envelope.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from aiohttp import web

from meshkit import AppError, Platform, PostOffice
from meshkit.testing import running_platform
from tests.support.servers import HOST, UvicornProcess

# Importing mercury-composable configures logging for the whole process: it clears the root logger's
# handlers, adds one writing to sys.stdout and sets the level to INFO (mercury_composable/log.py, _setup).
# Put the root logger back as it was, so the other tests of the session run as they would without it.
_root_logger = logging.getLogger()
_root_handlers, _root_level = list(_root_logger.handlers), _root_logger.level
import mercury_composable as mercury  # noqa: E402

_root_logger.handlers[:] = _root_handlers
_root_logger.setLevel(_root_level)

TARGET_MODULE = "mercury_interop_target"
TARGET_SOURCE = '''
"""A meshkit app for tests/http/test_mercury_interop.py, written to a temporary directory."""

from pathlib import Path
from typing import Any

from meshkit import AppError, FunctionRegistry, PostOffice, create_app

registry = FunctionRegistry()


@registry.route("interop.deadline")
async def deadline(body: Any) -> dict[str, Any]:
    """The body back, and the seconds left of this event's deadline (60 when it has none)."""
    return {"echo": body, "seconds_left": PostOffice().time_left(60)}


@registry.route("interop.refuse")
async def refuse(body: Any) -> None:
    raise AppError(422, "quantity must not be negative")


app = create_app(name="interop-target", config_dir=Path(__file__).parent, functions=registry)
'''

BODY = {"text": "hello", "number": 42, "pi": 3.14, "ok": True, "items": [1, "two", None], "raw": b"\x00\xff"}


# --- mercury-composable calls meshkit -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def meshkit_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornProcess]:
    """The meshkit app under ``meshkit run``, its module in a temporary directory (``--app-dir``)."""
    app_dir = tmp_path_factory.mktemp("mercury-interop")
    (app_dir / f"{TARGET_MODULE}.py").write_text(TARGET_SOURCE)
    with UvicornProcess(f"{TARGET_MODULE}:app", extra_args=["--app-dir", str(app_dir)]) as process:
        yield process


@pytest.fixture
async def mercury_post_office() -> AsyncIterator[mercury.PostOffice]:
    async with mercury.PostOffice() as post_office:  # closes its aiohttp session
        yield post_office


@pytest.mark.parametrize("timeout_ms", [2000, 5000])
async def test_mercury_gets_the_meshkit_reply_and_its_x_ttl_is_the_functions_deadline(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess, timeout_ms: int
) -> None:
    reply = await mercury_post_office.request(
        "interop.deadline", BODY, timeout_ms=timeout_ms, endpoint=meshkit_app.event_url
    )

    assert reply.get_status() == 200, reply.body
    assert reply.body["echo"] == BODY
    assert reply.sender == "interop.deadline"
    seconds_left = reply.body["seconds_left"]
    timeout = timeout_ms / 1000
    assert timeout - 1 < seconds_left <= timeout, f"x-ttl {timeout_ms} ms, yet {seconds_left} s were left"


async def test_mercury_gets_the_status_and_message_of_a_meshkit_handler_error(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    reply = await mercury_post_office.request(
        "interop.refuse", {"quantity": -1}, timeout_ms=2000, endpoint=meshkit_app.event_url
    )

    assert (reply.get_status(), reply.body) == (422, "quantity must not be negative")
    assert reply.has_error()


async def test_mercury_gets_a_clear_404_for_a_route_meshkit_does_not_serve(
    mercury_post_office: mercury.PostOffice, meshkit_app: UvicornProcess
) -> None:
    reply = await mercury_post_office.request(
        "interop.missing", "x", timeout_ms=2000, endpoint=meshkit_app.event_url
    )

    assert (reply.get_status(), reply.body) == (404, "Route interop.missing not found")


# --- meshkit calls mercury-composable -----------------------------------------------------------------------


@dataclass
class MercuryPeer:
    """mercury-composable's Event API server, and what reached its /api/event, as it arrived."""

    event_url: str
    envelopes: list[dict[str, Any]] = field(default_factory=list)  # each request body, MsgPack decoded
    ttl_headers: list[str | None] = field(default_factory=list)


async def mercury_echo(headers: dict[str, str], body: Any) -> dict[str, Any]:
    return {"body": body, "headers": headers}


async def mercury_conflict(headers: dict[str, str], body: Any) -> None:
    raise mercury.AppException(409, "Already exists")


async def mercury_crash(headers: dict[str, str], body: Any) -> None:
    raise RuntimeError("boom")


@pytest.fixture
async def mercury_peer() -> AsyncIterator[MercuryPeer]:
    registry = mercury.FunctionRegistry()
    registry.register("mercury.echo", mercury_echo)
    registry.register("mercury.conflict", mercury_conflict)
    registry.register("mercury.crash", mercury_crash)
    app = mercury.EventApiServer(registry).create_app()
    recorded = MercuryPeer(event_url="")

    @web.middleware
    async def record_request(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/api/event":  # aiohttp keeps the body read here for the handler
            recorded.envelopes.append(msgpack.unpackb(await request.read()))
            recorded.ttl_headers.append(request.headers.get("x-ttl"))
        return await handler(request)

    app.middlewares.append(record_request)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, 0).start()  # a free port, chosen by the system
        port = runner.addresses[0][1]
        recorded.event_url = f"http://{HOST}:{port}/api/event"
        yield recorded
    finally:
        await runner.cleanup()
        await registry.bus.close()  # the function workers, started on first use


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    """The meshkit caller: an app with no functions that reaches Mercury only over HTTP."""
    async with running_platform([], name="interop-caller") as caller:
        yield caller


async def test_meshkit_gets_the_mercury_reply_and_mercury_accepts_the_ttl_key(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    reply = await PostOffice(platform).request(
        "mercury.echo", BODY, {"lang": "en"}, timeout=2, endpoint=mercury_peer.event_url
    )

    assert reply.status == 200, reply.body
    assert reply.body == {"body": BODY, "headers": {"lang": "en"}}
    assert reply.sender == "mercury.echo"
    [sent] = mercury_peer.envelopes
    assert sent["to"] == "mercury.echo"
    assert "ttl" in sent, f"meshkit's envelope has no ttl key: {sorted(sent)}"
    assert 1000 < sent["ttl"] <= 2000
    assert mercury_peer.ttl_headers == ["2000"]


@pytest.mark.parametrize(
    ("route", "status", "message"),
    [("mercury.conflict", 409, "Already exists"), ("mercury.crash", 500, "boom")],
)
async def test_meshkit_gets_the_status_and_message_of_a_mercury_handler_error(
    platform: Platform, mercury_peer: MercuryPeer, route: str, status: int, message: str
) -> None:
    reply = await PostOffice(platform).request(route, "x", timeout=2, endpoint=mercury_peer.event_url)

    assert (reply.status, reply.body) == (status, message)


async def test_meshkit_raises_the_404_of_a_route_mercury_does_not_serve(
    platform: Platform, mercury_peer: MercuryPeer
) -> None:
    with pytest.raises(AppError) as refused:
        await PostOffice(platform).request("mercury.missing", "x", timeout=2, endpoint=mercury_peer.event_url)

    assert (refused.value.status, refused.value.message) == (404, "Route mercury.missing not found")
