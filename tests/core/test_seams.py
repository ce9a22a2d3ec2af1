"""The core's seams: one address type, the hooks the layers above plug into, and replace()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshkit import Address, AppConfig, AppError, EventEnvelope, FunctionRegistry, Platform, PostOffice
from meshkit.core import MeshCounters, RoutingView, current_event

ORIGIN = "20261201" + "ab" * 16


@pytest.mark.parametrize(
    ("text", "route", "origin", "inbox"),
    [
        ("hello.world", "hello.world", None, False),
        (f"hello.world@{ORIGIN}", "hello.world", ORIGIN, False),
        (f"@{ORIGIN}", "", ORIGIN, True),
        ("hello.world@", "hello.world", None, False),
    ],
)
def test_an_address_is_parsed_in_one_place(text: str, route: str, origin: str | None, inbox: bool) -> None:
    address = Address.parse(text)
    assert (address.route, address.origin, address.is_inbox) == (route, origin, inbox)
    assert str(address) == text.rstrip("@")


def test_addresses_are_written_in_one_place() -> None:
    assert Address.inbox(ORIGIN) == f"@{ORIGIN}" and Address.of("a.b", ORIGIN) == f"a.b@{ORIGIN}"


def bare(registry: FunctionRegistry | None = None) -> Platform:
    return Platform(AppConfig.load(argv=[], environ={}), name="bare", functions=list(registry or []))


class RecordingTracer:
    def __init__(self) -> None:
        self.ended: list[tuple[str, int, Any]] = []

    def begin(self, route: str, event: EventEnvelope, arrived: float) -> RecordingSpan:
        return RecordingSpan(self, route)


class RecordingSpan:
    def __init__(self, tracer: RecordingTracer, route: str) -> None:
        self.tracer, self.route = tracer, route

    def detach(self) -> None:
        pass

    def end(self, status: int, elapsed: float, result: Any) -> None:
        self.tracer.ended.append((self.route, status, result))


async def test_a_tracer_plugged_into_the_core_sees_each_traced_execution_and_nothing_else() -> None:
    registry = FunctionRegistry()

    @registry.route("inline.one")
    async def inline(body: Any) -> Any:
        return body

    @registry.route("awaits.one")
    async def awaits(body: Any) -> Any:
        await asyncio.sleep(0)
        raise AppError(409, "no")

    platform, tracer = bare(registry), RecordingTracer()
    platform.tracer = tracer
    await platform.start()
    try:
        po = PostOffice(platform)
        await po.request("inline.one", 1)  # untraced: no span
        assert tracer.ended == []
        traced = PostOffice(platform, trace_id="t-1")
        await traced.request("inline.one", 2)
        await traced.request("awaits.one", 3)
        assert tracer.ended == [("inline.one", 200, 2), ("awaits.one", 409, "no")]
    finally:
        await platform.stop()


async def test_a_bare_platform_has_no_event_over_http_and_says_how_to_get_it() -> None:
    platform = bare()
    await platform.start()
    try:
        with pytest.raises(RuntimeError, match="install"):
            await PostOffice(platform).request("a.b", endpoint="http://127.0.0.1:9/api/event")
    finally:
        await platform.stop()


class StaticRemote:
    """A RemoteRouter: one peer serving `far.away`; what it was asked to send is kept."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, EventEnvelope]] = []

    def pick(self, route: str) -> str | None:
        return ORIGIN if route == "far.away" else None

    def origins(self, route: str) -> list[str]:
        return [ORIGIN] if route == "far.away" else []

    def send(self, origin: str, event: EventEnvelope) -> None:
        self.sent.append((origin, event))

    def describe(self) -> RoutingView:
        return {"far.away": {ORIGIN: "peer, APP"}}, {ORIGIN: {"name": "peer"}}

    def counters(self) -> MeshCounters:
        return MeshCounters(len(self.sent), 0, 0, 0)


async def test_the_platform_reaches_other_apps_only_through_its_remote_router() -> None:
    platform = bare()
    await platform.start()
    try:
        po = PostOffice(platform)
        with pytest.raises(AppError) as unknown:
            await po.send("far.away", 1)
        assert unknown.value.status == 404
        remote = StaticRemote()
        platform.remote = remote
        await po.send("far.away", 2)
        await po.broadcast("far.away", 3)
        assert [(origin, e.to, e.body) for origin, e in remote.sent] == [
            (ORIGIN, "far.away", 2),
            (ORIGIN, f"far.away@{ORIGIN}", 3),
        ]
        assert po.search("far.away") == [ORIGIN] and po.exists("far.away")
        # an event from outside the process never goes on to another app
        with pytest.raises(AppError) as outside:
            platform.dispatch(EventEnvelope("far.away", 4), external=True)
        assert outside.value.status == 404 and len(remote.sent) == 2
    finally:
        platform.remote = None
        await platform.stop()


async def test_replace_swaps_a_handler_keeping_the_route_and_its_bounds() -> None:
    registry = FunctionRegistry()

    @registry.route("swap.me", instances=3, private=True, max_queue=5)
    async def original(body: Any) -> str:
        return "original"

    platform = bare(registry)
    await platform.start()
    try:
        po = PostOffice(platform)
        old = platform.replace("swap.me", lambda headers, body: f"stub {body}")
        assert old.handler is original
        spec = next(s for s in platform.functions() if s.route == "swap.me")
        assert (spec.instances, spec.private, spec.max_queue) == (3, True, 5)
        assert (await po.request("swap.me", 1)).body == "stub 1"
        platform.replace("swap.me", old.handler)
        assert (await po.request("swap.me", 2)).body == "original"
        with pytest.raises(AppError) as missing:
            platform.replace("no.such", old.handler)
        assert missing.value.status == 404
    finally:
        await platform.stop()


async def test_a_handler_knows_its_own_platform_when_two_share_a_process() -> None:
    seen: dict[str, str] = {}

    def registry(name: str) -> FunctionRegistry:
        functions = FunctionRegistry()

        @functions.route("who.am.i")
        async def who(body: Any) -> str:
            context = current_event.get()
            assert context is not None
            seen[name] = PostOffice().platform.name
            return str(context.route)

        return functions

    first, second = bare(registry("first")), bare(registry("second"))
    first.name, second.name = "first", "second"
    await first.start()
    await second.start()  # the process's current platform is now the second
    try:
        assert (await PostOffice(first).request("who.am.i", None)).body == "who.am.i"
        await PostOffice(second).request("who.am.i", None)
        assert seen == {"first": "first", "second": "second"}
    finally:
        await second.stop()
        await first.stop()
