"""Per-route access in the core: a route with `allow` takes calls from outside only from the apps it names,
as proven by the edge the call came through (docs/protocol/access.md); the app's own code always may."""

from __future__ import annotations

from typing import Any

import pytest

from meshkit import AppError, EventEnvelope, FunctionRegistry, PostOffice
from meshkit.core import NOT_PROVEN, contract, make_spec
from meshkit.testing import running_platform


def guarded_registry() -> FunctionRegistry:
    registry = FunctionRegistry()

    @registry.route("guarded.secret", allow=["rest-example", "billing"])
    async def secret(body: Any) -> str:
        return "secret"

    @registry.route("guarded.plain", allow=["rest-example"])
    def plain(body: Any) -> str:  # a plain def too: the check is before any instance runs
        return "plain"

    return registry


def from_outside(route: str, caller: str | None, origin: str | None = None) -> EventEnvelope:
    event = EventEnvelope(route, None)
    event.caller, event.caller_origin = caller, origin
    return event


async def test_the_app_s_own_code_may_always_call_its_guarded_route() -> None:
    async with running_platform(guarded_registry()) as platform:
        assert (await PostOffice(platform).request("guarded.secret")).body == "secret"


@pytest.mark.parametrize("route", ["guarded.secret", "guarded.plain"])
async def test_from_outside_only_a_proven_allowed_caller_gets_through(
    route: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_platform(guarded_registry()) as platform:
        reply = await platform.call(from_outside(route, "rest-example", "o1"), 5, external=True)
        assert reply.status == 200
        with pytest.raises(AppError) as refused:
            await platform.call(from_outside(route, "intruder", "o2"), 5, external=True)
        assert refused.value.status == 403 and "not from intruder" in refused.value.message
        assert f"Refused a call to {route} from intruder (o2)" in caplog.text
        with pytest.raises(AppError) as unproven:
            await platform.call(from_outside(route, None), 5, external=True)
        assert unproven.value.status == 403 and NOT_PROVEN in unproven.value.message
        with pytest.raises(AppError):  # dispatch, as the mesh's transport delivers, refuses as call does
            platform.dispatch(from_outside(route, "intruder"), external=True)
        own = await platform.call(from_outside(route, platform.name, "o3"), 5, external=True)
        assert own.status == 200  # another instance of this app


async def test_allow_is_kept_when_a_handler_is_replaced_and_given_at_run_time() -> None:
    async with running_platform(guarded_registry()) as platform:

        async def other(body: Any) -> str:
            return "other"

        platform.replace("guarded.secret", other)
        with pytest.raises(AppError):
            await platform.call(from_outside("guarded.secret", "intruder"), 5, external=True)
        platform.register("late.guarded", other, allow=["billing"])
        assert (await platform.call(from_outside("late.guarded", "billing"), 5, external=True)).status == 200


def test_allow_is_a_list_of_names_and_is_in_the_contract() -> None:
    async def handler(body: Any) -> None: ...

    assert make_spec("a.b", handler, allow=[]).allow == frozenset()  # nobody but the app itself
    assert contract(make_spec("a.b", handler, allow=["x", "y"]))["allow"] == ["x", "y"]
    assert "allow" not in contract(make_spec("a.b", handler))
    for bad in ("rest-example", [""], [" padded "], [3]):
        with pytest.raises((TypeError, ValueError)):
            make_spec("a.b", handler, allow=bad)  # type: ignore[arg-type]
