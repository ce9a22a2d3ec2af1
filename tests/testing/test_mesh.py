"""meshkit.testing.TestMesh: apps meshed in the test's process, each with its own platform and table."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from meshkit import AppError, FunctionRegistry, Platform, PostOffice
from meshkit.testing import MeshFull, TestMesh

REPO = Path(__file__).resolve().parents[2]


def billing() -> FunctionRegistry:
    registry = FunctionRegistry()

    @registry.route("billing.charge")
    async def charge(headers: dict[str, str], body: Any, instance: int) -> Any:
        return {"charged": body, "by": headers["my_route"]}

    @registry.route("billing.audit", private=True)
    async def audit(body: Any) -> str:
        return "in-process only"

    return registry


def orders() -> FunctionRegistry:
    registry = FunctionRegistry()

    @registry.route("orders.place")
    async def place(body: Any) -> Any:
        reply = await PostOffice().request("billing.charge", body, timeout=5)
        return {"order": body, "billing": reply.body}

    return registry


async def test_apps_call_each_other_across_the_mesh_each_with_its_own_table() -> None:
    async with TestMesh() as mesh:
        shop = await mesh.app("orders", orders())
        bank = await mesh.app("billing", billing())
        assert shop.origin != bank.origin
        topics = mesh.topics()
        assert set(topics) == {shop.origin, bank.origin} and len(set(topics.values())) == 2
        # each knows the other as a peer in a routing table of its own
        assert set(mesh.node(shop).table.peers) == {bank.origin}
        assert set(mesh.node(bank).table.peers) == {shop.origin}
        assert PostOffice(shop).search("billing.charge") == [bank.origin]

        reply = await PostOffice(shop).request("orders.place", 3, timeout=5)
        assert reply.body == {"order": 3, "billing": {"charged": 3, "by": "billing.charge"}}
        # it went over the mesh's transport, not the local bus: the request one way, the reply the other
        assert mesh.node(bank).transport.received == 1 and mesh.node(shop).transport.received == 1


async def test_a_private_function_is_never_reachable_from_another_app() -> None:
    async with TestMesh() as mesh:
        shop = await mesh.app("orders", orders())
        bank = await mesh.app("billing", billing())
        po = PostOffice(shop)
        assert not po.exists("billing.audit")
        with pytest.raises(AppError) as unknown:
            await po.request("billing.audit", timeout=5)
        assert unknown.value.status == 404
        direct = await po.request(f"billing.audit@{bank.origin}", timeout=5)
        assert direct.status == 403


async def test_large_events_travel_in_segments_between_apps() -> None:
    echo = FunctionRegistry()

    @echo.route("echo.back")
    async def back(body: Any) -> Any:
        return body

    async with TestMesh() as mesh:
        caller = await mesh.app("caller", FunctionRegistry())
        await mesh.app("echo", echo)
        large = os.urandom(300 * 1024)
        assert (await PostOffice(caller).request("echo.back", large, timeout=5)).body == large


async def test_requests_are_balanced_across_instances_and_a_broadcast_reaches_each() -> None:
    seen: list[str] = []

    def worker(tag: str) -> FunctionRegistry:
        registry = FunctionRegistry()

        @registry.route("work.do")
        async def do(body: Any) -> str:
            if body == "all":
                seen.append(tag)
            return tag

        return registry

    async with TestMesh() as mesh:
        caller = await mesh.app("caller", FunctionRegistry())
        await mesh.app("worker-1", worker("one"))
        await mesh.app("worker-2", worker("two"))
        po = PostOffice(caller)
        answers = [(await po.request("work.do", n, timeout=5)).body for n in range(6)]
        assert sorted(answers) == ["one"] * 3 + ["two"] * 3
        await po.broadcast("work.do", "all")
        await mesh.until(lambda: len(seen) == 2, "the broadcast at both workers")
        assert sorted(seen) == ["one", "two"]


async def test_a_stopped_app_leaves_and_its_routes_go_with_it() -> None:
    async with TestMesh() as mesh:
        shop = await mesh.app("orders", orders())
        bank = await mesh.app("billing", billing())
        await mesh.stop(bank)
        assert not bank.running
        assert mesh.node(shop).table.peers == {}
        assert not PostOffice(shop).exists("billing.charge")
        with pytest.raises(AppError) as gone:
            await PostOffice(shop).request("billing.charge", 1, timeout=5)
        assert gone.value.status == 404
        assert set(mesh.topics()) == {shop.origin}


async def test_a_stub_replaces_a_route_for_a_block_and_the_real_one_comes_back() -> None:
    async with TestMesh() as mesh:
        shop = await mesh.app("orders", orders())
        await mesh.app("billing", billing())
        po = PostOffice(shop)
        async with mesh.stub("billing.charge", lambda body: f"stubbed {body}"):
            assert (await po.request("orders.place", 1, timeout=5)).body["billing"] == "stubbed 1"
        assert (await po.request("orders.place", 2, timeout=5)).body["billing"]["charged"] == 2


async def test_a_stub_for_a_route_nobody_serves_joins_the_mesh_for_the_block() -> None:
    async with TestMesh() as mesh:
        shop = await mesh.app("orders", orders())
        po = PostOffice(shop)
        assert not po.exists("billing.charge")
        async with mesh.stub("billing.charge", lambda body: {"stub": body}):
            assert (await po.request("orders.place", 5, timeout=5)).body["billing"] == {"stub": 5}
            assert len(mesh.apps) == 2
        assert not po.exists("billing.charge") and mesh.apps == [shop]


async def test_apps_of_other_closed_user_groups_do_not_see_each_other() -> None:
    async with TestMesh() as mesh:
        one = await mesh.app("group-one", billing())
        two = await mesh.app("group-two", FunctionRegistry(), properties={"closed.user.group": "2"})
        assert mesh.node(one).table.peers == {} and mesh.node(two).table.peers == {}
        assert not PostOffice(two).exists("billing.charge")


async def test_a_full_mesh_refuses_the_next_app_and_hands_out_never_used_topics_first() -> None:
    async with TestMesh({"max.virtual.topics": "2"}) as mesh:
        first = await mesh.app("first", FunctionRegistry())
        second = await mesh.app("second", FunctionRegistry())
        with pytest.raises(MeshFull):
            await mesh.app("third", FunctionRegistry())
        assert [app.name for app in mesh.apps] == ["first", "second"]
        first_topic = mesh.topics()[first.origin]
        await mesh.stop(first)
        again = await mesh.app("again", FunctionRegistry())
        assert mesh.topics()[again.origin] == first_topic  # the only free one
        assert second.running


async def test_each_app_is_equipped_as_install_equips_it() -> None:
    async with TestMesh() as mesh:
        app: Platform = await mesh.app("traced", billing(), properties={"tracing.enabled": "true"})
        assert app.tracer is not None and app.event_client is not None
        assert app.has_local("cloud.connector.health")
        health = await PostOffice(app).request("cloud.connector.health", headers={"type": "health"})
        assert health.status == 200 and health.body.startswith("Loopback test took")


def test_the_pytest_fixture_serves_a_users_own_test_suite(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["meshkit.testing.plugin"]\n', encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n", encoding="utf-8"
    )
    (tmp_path / "test_users_app.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from meshkit import FunctionRegistry, PostOffice

            pytestmark = pytest.mark.asyncio

            async def test_two_apps(meshkit_mesh):
                registry = FunctionRegistry()

                @registry.route("greet.me")
                async def greet(body):
                    return f"hello {body}"

                await meshkit_mesh.app("greeter", registry)
                caller = await meshkit_mesh.app("caller", FunctionRegistry())
                assert (await PostOffice(caller).request("greet.me", "you")).body == "hello you"
            """
        ),
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
