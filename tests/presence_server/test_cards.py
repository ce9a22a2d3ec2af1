"""What a monitor keeps of its apps' cards and how it hands them on (docs/protocol/presence.md#cards), without
a broker: the cards in the state, the frames a group shares, a newcomer's list, and a moving app's claim."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from meshkit import AppConfig, Platform
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import TopicLayout, contracts_digest
from meshkit.security import Identity
from presence_server._cards import CardTexts
from presence_server._hello import check_card
from presence_server._monitor import PresenceMonitor
from presence_server._sessions import MAX_FRAME_CHARS, NOTICE_INTERVAL, Session, Sessions, frames
from presence_server._state import MeshState

CONTRACTS = {"hello.pojo": {"input": {}, "output": {}, "instances": 1}}


def origin(n: int) -> str:
    return f"20261203{n:032x}"


def card_of(identity: Identity, who: str, contracts: dict[str, Any] = CONTRACTS) -> dict[str, Any]:
    fields = {"type": "card", "origin": who, "name": "app", "routes": ["hello.pojo"]}
    return identity.sign_control({**fields, "contracts": contracts_digest(contracts)})


def info(identity: Identity) -> dict[str, Any]:
    return {
        "name": "app",
        "version": "1",
        "personality": "APP",
        "group": 1,
        "created": "2026-12-03T00:00:00.000Z",
        "key": identity.public_key,
    }


def claimed(state: MeshState, n: int, identity: Identity, topic: int | None = None) -> str:
    who = origin(n)
    claim = {"topic": n if topic is None else topic, "origin": who, "monitor": "m1", "cards": True}
    assert state.claim({**claim, "info": info(identity)}).won
    return who


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


def test_a_monitor_keeps_a_card_and_its_contracts_once_for_every_card_that_names_them() -> None:
    state, one, two = MeshState(), Identity(), Identity()
    a, b = claimed(state, 1, one), claimed(state, 2, two)
    state.card({"origin": a, "monitor": "m1", "card": card_of(one, a), "contracts": CONTRACTS})
    state.card({"origin": b, "monitor": "m1", "card": card_of(two, b), "contracts": CONTRACTS})
    digest = contracts_digest(CONTRACTS)
    assert state.connections[a].contracts == state.connections[b].contracts == digest
    assert list(state.bodies) == [digest]
    state.leave(a)
    assert list(state.bodies) == [digest]  # b still names them
    state.leave(b)
    assert state.bodies == {}


@pytest.mark.parametrize(
    "change",
    [
        {"origin": origin(9)},  # another app's card
        # not what the card's digest says
        {"contracts": {"other.route": {"input": {}, "output": {}, "instances": 1}}},
    ],
)
def test_a_card_that_is_not_the_apps_or_whose_contracts_do_not_match_is_not_kept_whole(
    change: dict[str, Any],
) -> None:
    state, one = MeshState(), Identity()
    a = claimed(state, 1, one)
    card = card_of(one, a)
    message = {"origin": a, "monitor": "m1", "card": card, "contracts": CONTRACTS}
    if "origin" in change:
        message["card"] = {**card, "origin": change["origin"]}
    else:
        message["contracts"] = change["contracts"]
    state.card(message)
    connection = state.connections[a]
    assert connection.contracts is None and state.bodies == {}
    assert connection.card is None or "origin" not in change


def test_a_monitor_checks_a_card_under_the_key_of_the_hello() -> None:
    one, other = Identity(), Identity()
    a = origin(1)
    good = {"card": card_of(one, a), "contracts": CONTRACTS}
    assert check_card(good, a, one.public_key)
    assert not check_card({}, a, one.public_key)
    for bad, why in [
        ({"card": card_of(other, a), "contracts": CONTRACTS}, "not signed"),
        ({"card": card_of(one, origin(2)), "contracts": CONTRACTS}, "not a card of this origin"),
        ({"card": card_of(one, a), "contracts": {"x": 1}}, "not those the card's digest names"),
        ({"card": "garbage", "contracts": None}, "not a card of this origin"),
        ({"card": {**card_of(one, a), "pad": "x" * 300_000}, "contracts": CONTRACTS}, "at most"),
    ]:
        with pytest.raises(ValueError, match=why):
            check_card(bad, a, one.public_key)


def test_a_moving_app_keeps_its_card_on_the_same_topic_and_loses_it_on_another() -> None:
    state, one = MeshState(), Identity()
    a = claimed(state, 1, one)
    state.card({"origin": a, "monitor": "m1", "card": card_of(one, a), "contracts": CONTRACTS})
    moved = {"topic": 1, "origin": a, "monitor": "m2", "replaces": "m1", "cards": True, "info": info(one)}
    assert state.claim(moved).won
    assert state.connections[a].card is not None  # its peers still reach it where they did
    assert state.claim({**moved, "topic": 5, "monitor": "m3", "replaces": "m2"}).won
    assert state.connections[a].card is None and state.bodies == {}  # until it sends one, listening there


def test_a_snapshot_in_parts_carries_the_cards() -> None:
    old, new, one, two = MeshState(), MeshState(), Identity(), Identity()
    a, b = claimed(old, 1, one), claimed(old, 2, two)
    old.card({"origin": a, "monitor": "m1", "card": card_of(one, a), "contracts": CONTRACTS})
    parts = old.snapshots(1)
    assert len(parts) == 2 and parts[1]["monitors"] == {}
    for part in parts:
        new.merge(json.loads(json.dumps(part)))  # as the log carries it
    assert new.connections[a].card == old.connections[a].card and new.connections[a].cards
    assert new.connections[b].card is None and list(new.bodies) == [contracts_digest(CONTRACTS)]


def test_frames_stay_under_the_limit_and_carry_each_contracts_map_they_name() -> None:
    body = json.dumps(CONTRACTS)
    notices = [(json.dumps({"type": "member", "n": n, "pad": "x" * 1000}), "d1") for n in range(1200)]
    made = frames(notices, lambda digest: body if digest == "d1" else None)
    assert len(made) > 1
    decoded = [json.loads(frame) for frame in made]
    assert all(len(frame) <= MAX_FRAME_CHARS + 2000 for frame in made)
    assert [n["n"] for frame in decoded for n in frame["notices"]] == list(range(1200))
    assert all(frame["contracts"] == {"d1": CONTRACTS} for frame in decoded)


def test_every_newcomer_gets_the_same_texts_for_the_cards_it_shares_with_others() -> None:
    """Each newcomer's list has its own card too, so their first frames are the very same text."""
    state = MeshState()
    layout = TopicLayout(32, 288)
    texts = CardTexts(state, layout)
    keys = [Identity() for _ in range(5)]
    for n, identity in enumerate(keys):
        who = claimed(state, n, identity)
        state.card({"origin": who, "monitor": "m1", "card": card_of(identity, who), "contracts": CONTRACTS})
    ready_a, listed_a = texts.ready("multiplex.0001-001", "m1", 1, origin(0))
    _, listed_b = texts.ready("multiplex.0001-002", "m1", 1, origin(4))
    assert frames(listed_a, texts.body) == frames(listed_b, texts.body)
    a = json.loads(ready_a)
    assert a["cards"] is True and a["legacy"] == [] and origin(0) not in a["members"]
    assert set(a["members"]) == {origin(n) for n in range(1, 5)}


async def test_a_group_shares_one_frame_per_interval_and_an_app_without_cards_gets_each_notice() -> None:
    sessions = Sessions(lambda digest: None)
    sockets = {n: FakeSocket() for n in range(3)}
    for n, socket in sockets.items():
        session = Session(socket, time.monotonic(), group=1, cards=n != 2)  # type: ignore[arg-type]
        sessions[origin(n)] = session
    sessions[origin(5)] = Session(FakeSocket(), time.monotonic(), group=2, cards=True)  # type: ignore[arg-type]
    overflowed: list[Session] = []
    for n in range(3):
        notice = json.dumps({"type": "member", "origin": origin(n)})
        sessions.notify(1, origin(n), (notice, None), overflowed.append)
    await asyncio.sleep(NOTICE_INTERVAL + 0.05)
    shared = [sessions[origin(n)].notices.get_nowait()[0] for n in (0, 1)]
    assert shared[0] is shared[1]  # one text for the whole group
    assert [n["origin"] for n in json.loads(shared[0])["notices"]] == [origin(0), origin(1), origin(2)]
    legacy = sessions[origin(2)].notices
    told = [json.loads(legacy.get_nowait()[0])["origin"] for _ in range(legacy.qsize())]
    assert told == [origin(0), origin(1)]  # each alone, and not of itself
    assert sessions[origin(5)].notices.empty() and overflowed == []


async def test_a_moving_app_is_admitted_as_soon_as_its_old_monitor_has_released_it() -> None:
    """The old monitor is alive, and writes the app's leave while the new one waits: no refusal, no wait
    for the old monitor to go quiet."""
    config = AppConfig.load(argv=[], environ={}, overrides={"monitor.heartbeat": "0.05"})
    platform = Platform(config, name="presence-monitor", functions=[])
    monitor = PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(32, 288), groups=10)
    await monitor.start()
    try:
        one = Identity()
        monitor.state.heartbeat({"id": "old-monitor"})
        who = origin(1)
        claim = {"topic": 3, "origin": who, "monitor": "old-monitor", "info": info(one)}
        assert monitor.state.claim(claim).won

        async def old_monitor_releases() -> None:
            await asyncio.sleep(0.3)
            monitor.state.heartbeat({"id": "old-monitor"})  # still alive
            monitor.state.leave(who, owner="old-monitor")

        release = asyncio.create_task(old_monitor_releases())
        started = time.monotonic()
        topic = await monitor._admit(who, {**info(one), "topic": "multiplex.0001-003"})
        await release
        assert topic == 3 and monitor.state.connections[who].monitor == monitor.id
        assert time.monotonic() - started < 2.0
    finally:
        await monitor.stop()


async def test_an_app_without_cards_is_told_of_a_new_card_by_the_key_alone() -> None:
    """It would ignore the card: the monitor does not send it the bytes (the card and its topic)."""
    config = AppConfig.load(argv=[], environ={}, overrides={"monitor.heartbeat": "0.05"})
    platform = Platform(config, name="presence-monitor", functions=[])
    monitor = PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(32, 288), groups=10)
    with_cards, without = FakeSocket(), FakeSocket()
    monitor.sessions[origin(7)] = Session(with_cards, time.monotonic(), group=1, cards=True)  # type: ignore[arg-type]
    monitor.sessions[origin(8)] = Session(without, time.monotonic(), group=1, cards=False)  # type: ignore[arg-type]
    one = Identity()
    who = claimed(monitor.state, 1, one)
    card = card_of(one, who)
    monitor._apply({"type": "card", "origin": who, "monitor": "m1", "card": card, "contracts": CONTRACTS})
    await asyncio.sleep(NOTICE_INTERVAL + 0.05)
    plain = json.loads(monitor.sessions[origin(8)].notices.get_nowait()[0])
    assert plain == {"type": "member", "origin": who, "key": one.public_key}
    framed = json.loads(monitor.sessions[origin(7)].notices.get_nowait()[0])
    [member] = framed["notices"]
    assert member["card"] == card and member["topic"] == "multiplex.0001-001"
