"""An app takes its peers' cards from the monitor's frames (docs/protocol/presence.md#cards) only under the
keys vouched for them: forged, stale, malformed or misdigested cards are refused or cut down, and logged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshkit.mesh import MeshNode
from meshkit.mesh._cards import make_card
from meshkit.security import Identity
from meshkit.testing import TestMesh
from tests.support.identities import join

LAMBDA = "20261203" + "1a" * 16
TOPIC = "multiplex.0001-003"
CONTRACTS = {"hello.pojo": {"input": {"type": "object"}, "output": {}, "instances": 2}}


@pytest.fixture
async def node() -> AsyncIterator[MeshNode]:
    async with TestMesh() as mesh:
        app = mesh.node(await mesh.app("rest-example", []))
        app.carded = True  # as if connected to a monitor that hands it cards
        yield app


def member(identity: Identity, card: dict[str, Any], topic: str = TOPIC) -> dict[str, Any]:
    return {"type": "member", "origin": LAMBDA, "key": identity.public_key, "card": card, "topic": topic}


def frame(*notices: dict[str, Any], contracts: object = None) -> dict[str, Any]:
    return {"type": "notices", "notices": list(notices), "contracts": contracts or {}}


def carded(identity: Identity, **fields: Any) -> dict[str, Any]:
    """The app's card and the contracts beside it, as its `card` message brings them."""
    me = {k: v for k, v in join(LAMBDA, **fields).items() if k not in ("type", "topic")}
    return make_card(identity, me, CONTRACTS)


async def test_a_card_from_the_monitor_adds_the_peer_with_its_routes_topic_and_contracts(
    node: MeshNode,
) -> None:
    lambda_app = Identity()
    made = carded(lambda_app)
    digest = made["card"]["contracts"]
    node._on_notice(frame(member(lambda_app, made["card"]), contracts={digest: made["contracts"]}))
    assert node.table.origins("hello.pojo") == [LAMBDA]
    assert node.table.peers[LAMBDA].topic.name == TOPIC
    assert node.table.contracts()[LAMBDA]["hello.pojo"]["instances"] == 2


async def test_a_card_signed_by_another_key_is_refused(
    node: MeshNode, caplog: pytest.LogCaptureFixture
) -> None:
    vouched, forger = Identity(), Identity()
    node._on_notice(frame(member(vouched, carded(forger)["card"])))
    assert node.table.origins("hello.pojo") == []
    assert (
        f"Refused the card of {LAMBDA} from the presence monitor: not signed by that app's key" in caplog.text
    )


async def test_contracts_that_are_not_what_the_digest_names_are_not_taken(node: MeshNode) -> None:
    lambda_app = Identity()
    made = carded(lambda_app)
    swapped = {"hello.pojo": {"input": {}, "output": {}, "instances": 9}}
    node._on_notice(frame(member(lambda_app, made["card"]), contracts={made["card"]["contracts"]: swapped}))
    assert node.table.origins("hello.pojo") == [LAMBDA]  # the card holds; the contracts beside it do not
    assert LAMBDA not in node.table.contracts()


async def test_a_card_older_than_a_route_change_taken_since_only_moves_the_peer(node: MeshNode) -> None:
    lambda_app = Identity()
    first = carded(lambda_app)["card"]
    node._on_notice(frame(member(lambda_app, first)))
    change = lambda_app.sign_control({"type": "routes", "origin": LAMBDA, "add": ["hello.world"]})
    node._on_control(change)
    assert node.table.origins("hello.world") == [LAMBDA]
    node._on_notice(frame(member(lambda_app, first, topic="multiplex.0001-009")))  # moved, same card
    assert node.table.origins("hello.world") == [LAMBDA]  # the card's routes are older: not taken
    assert node.table.peers[LAMBDA].topic.name == "multiplex.0001-009"


async def test_malformed_frames_and_cards_are_logged_and_change_nothing(
    node: MeshNode, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_app = Identity()
    good = carded(lambda_app)["card"]
    for notice in (
        {"type": "notices", "notices": "not a list"},
        frame("not a map"),  # type: ignore[arg-type]
        frame(member(lambda_app, "garbage")),  # type: ignore[arg-type]
        frame(member(lambda_app, {**good, "origin": "20261203" + "2b" * 16})),
        frame(member(lambda_app, good, topic="not-a-topic")),
        frame(member(lambda_app, {k: v for k, v in good.items() if k != "seq"})),
        frame({**member(lambda_app, good), "topic": None}),
    ):
        node._on_notice(notice)
    assert node.table.peers == {}
    assert caplog.text.count(f"Refused the card of {LAMBDA}") == 5


async def test_an_app_skips_what_a_frame_says_of_itself_and_joins_written_for_apps_without_cards(
    node: MeshNode,
) -> None:
    me = node.platform.origin
    node._on_notice(frame({"type": "gone", "origin": me, "reason": "its own notice"}))
    assert node.vouched.key(me) is None
    lambda_app = Identity()
    node._on_notice({"type": "member", "origin": LAMBDA, "key": lambda_app.public_key})
    node._on_control(lambda_app.sign_control(join(LAMBDA, cards=True)))
    assert node.table.origins("hello.pojo") == []  # its card comes from the monitors
    node.carded = False  # an app without cards takes it (and answers it), and takes no card
    made = carded(lambda_app, routes=["hello.world"])
    node._on_notice(frame(member(lambda_app, made["card"])))
    assert node.table.origins("hello.world") == []
    node._on_control(lambda_app.sign_control(join(LAMBDA, cards=True)))
    assert node.table.origins("hello.pojo") == [LAMBDA]
