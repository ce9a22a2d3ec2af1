"""The `contracts` control message (docs/protocol/control.md): a peer's routes' contracts are believed only
under its vouched key, a malformed one is refused and logged and changes nothing, and a later one replaces
the earlier; the catalog lists only routes the peer still serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshkit.mesh import MeshNode
from meshkit.mesh._frames import FrameError
from meshkit.security import Identity
from meshkit.testing import TestMesh
from tests.support.identities import join

LAMBDA = "20261125" + "1a" * 16
POJO = {"title": "PoJo", "type": "object", "properties": {"id": {"type": "integer"}}}


def contracts(**routes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "contracts", "origin": LAMBDA, "contracts": routes}


def described(output: dict[str, Any], instances: int = 10) -> dict[str, Any]:
    return {"input": {}, "output": output, "instances": instances, "idempotent": True, "streaming": False}


@pytest.fixture
async def node() -> AsyncIterator[MeshNode]:
    async with TestMesh() as mesh:
        yield mesh.node(await mesh.app("rest-example", []))


@pytest.fixture
async def lambda_app(node: MeshNode) -> Identity:
    identity = Identity()
    node._on_notice({"type": "member", "origin": LAMBDA, "key": identity.public_key})
    node._on_control(identity.sign_control(join(LAMBDA)))
    assert node.table.origins("hello.pojo") == [LAMBDA]
    return identity


async def test_a_peer_s_contracts_are_kept_for_the_routes_it_serves(
    node: MeshNode, lambda_app: Identity
) -> None:
    node._on_control(
        lambda_app.sign_control(contracts(**{"hello.pojo": described(POJO), "not.served": described({})}))
    )
    assert node.router.contracts() == {LAMBDA: {"hello.pojo": described(POJO)}}
    # a later message replaces the earlier one
    node._on_control(lambda_app.sign_control(contracts(**{"hello.pojo": described({"type": "string"}, 3)})))
    assert node.router.contracts()[LAMBDA]["hello.pojo"]["output"] == {"type": "string"}
    assert node.router.contracts()[LAMBDA]["hello.pojo"]["instances"] == 3


async def test_contracts_signed_by_another_key_are_refused(
    node: MeshNode, lambda_app: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    node._on_control(Identity().sign_control(contracts(**{"hello.pojo": described({"type": "null"})})))
    assert node.router.contracts() == {}
    assert "Refused a contracts control message" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [
        "not a map",
        ["hello.pojo"],
        {"hello.pojo": "a string"},
        {"hello.pojo": {"input": {}, "output": {}}},  # no instances
        {"hello.pojo": {"input": [], "output": {}, "instances": 1}},
        {"hello.pojo": {"input": {}, "output": {}, "instances": "10"}},
        {"hello.pojo": {"input": {}, "output": {}, "instances": True}},
        {7: described({})},
        {f"r{n}.x": described({}) for n in range(2001)},
    ],
)
async def test_a_malformed_contracts_message_is_refused_and_changes_nothing(
    node: MeshNode, lambda_app: Identity, bad: object
) -> None:
    node._on_control(lambda_app.sign_control(contracts(**{"hello.pojo": described(POJO)})))
    with pytest.raises(FrameError):  # the record handler logs it and skips the record
        node._on_control(lambda_app.sign_control({"type": "contracts", "origin": LAMBDA, "contracts": bad}))
    assert node.router.contracts() == {LAMBDA: {"hello.pojo": described(POJO)}}


async def test_our_own_contracts_message_describes_our_public_routes_only(node: MeshNode) -> None:
    message = node._contracts()
    assert message["type"] == "contracts" and message["origin"] == node.platform.origin
    assert set(message["contracts"]) == set(node.platform.public_routes())


async def test_our_contracts_message_follows_a_route_added_or_removed_at_run_time(node: MeshNode) -> None:
    async def added(body: int) -> int:
        return body

    before = node._contracts()
    assert node._contracts() is before  # made once: each join heard is answered with it
    node.platform.register("added.later", added)
    assert node._contracts()["contracts"]["added.later"]["input"] == {"type": "integer"}
    await node.platform.release("added.later")
    assert "added.later" not in node._contracts()["contracts"]
