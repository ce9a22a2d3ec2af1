"""The presence monitors' shared state, without a broker: who holds which virtual topic (in log order),
leaves and moves, snapshots, and the topic a monitor gives an app asking for one that somebody holds."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshkit import AppConfig, Platform
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import TopicLayout
from presence_server._hello import Refused, keep_alive_seq
from presence_server._monitor import PresenceMonitor
from presence_server._state import MeshState
from tests.support.identities import PUBLIC_KEY

INFO = {
    "name": "app",
    "version": "1",
    "personality": "APP",
    "group": 1,
    "created": "2026-11-25T00:00:00.000Z",
    "key": PUBLIC_KEY,
}


def test_the_first_claim_in_log_order_wins_a_topic() -> None:
    state = MeshState()
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO}).won
    assert not state.claim({"topic": 0, "origin": "b", "monitor": "m2", "info": INFO}).won
    assert state.holders == {0: "a"}
    # the holder may claim its topic again through a monitor that saw its old one gone (it moved)
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m2", "replaces": "m1", "info": INFO}).won
    assert state.connections["a"].monitor == "m2"


def test_an_origin_held_through_one_monitor_is_never_taken_by_another_that_did_not_see_it_gone() -> None:
    """The cause of a flaky test_two_monitors_back_each_other_up: monitor B, its view of the log behind,
    claimed a fresh topic for an origin A held, and won. Decided in log order now, whatever B saw."""
    state = MeshState()
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO}).won
    for claim in (
        {"topic": 1, "origin": "a", "monitor": "m2", "info": INFO},  # B had not read A's claim yet
        {"topic": 0, "origin": "a", "monitor": "m2", "info": INFO},  # same topic, still not B's to take
        {"topic": 1, "origin": "a", "monitor": "m2", "replaces": "m3", "info": INFO},  # wrong monitor gone
    ):
        result = state.claim(claim)
        assert (result.won, result.held_via) == (False, "m1")
    assert state.holders == {0: "a"} and state.connections["a"].monitor == "m1"
    # the same monitor may claim again (the app reconnected to it), and a takeover naming m1 wins
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO}).won
    moved = state.claim({"topic": 1, "origin": "a", "monitor": "m2", "replaces": "m1", "info": INFO})
    assert moved.won and moved.released == 0 and state.holders == {1: "a"}


def test_a_topic_is_never_held_by_two_apps_whatever_the_order() -> None:
    state = MeshState()
    messages = [
        {"topic": t % 3, "origin": o, "monitor": "m", "info": INFO} for t, o in enumerate("abcdefabc")
    ]
    for message in messages:
        state.claim(message)
    holders = list(state.holders.values())
    assert len(holders) == len(set(holders))
    assert all(state.connections[o].topic == t for t, o in state.holders.items())


def test_leaving_releases_the_topic_and_moving_releases_the_old_one() -> None:
    state = MeshState()
    state.claim({"topic": 4, "origin": "a", "monitor": "m", "info": INFO})
    moved = state.claim({"topic": 5, "origin": "a", "monitor": "m", "info": INFO})
    assert moved.released == 4 and state.holders == {5: "a"}
    assert state.leave("a") is not None
    assert state.holders == {} and state.free_topic(288, set()) == 0
    assert state.leave("a") is None


def test_a_released_topic_is_handed_out_again_last() -> None:
    """Never-used topics first, then the one released longest ago: stray records for a gone app rarely
    meet a newcomer, and the partitions' logs grow evenly."""
    state = MeshState(max_topics=4)
    for topic, origin in enumerate("abc"):
        state.claim({"topic": topic, "origin": origin, "monitor": "m", "info": INFO})
    state.leave("b")
    state.leave("a")
    assert state.free_topic(4, set()) == 3  # never used
    state.claim({"topic": 3, "origin": "d", "monitor": "m", "info": INFO})
    assert state.free_topic(4, set()) == 1  # released before topic 0
    assert state.free_topic(4, {1}) == 0
    state.claim({"topic": 1, "origin": "e", "monitor": "m", "info": INFO})
    state.claim({"topic": 0, "origin": "f", "monitor": "m", "info": INFO})
    assert state.free_topic(4, set()) is None


def test_a_new_monitor_merges_a_snapshot_without_overwriting() -> None:
    old, new = MeshState(), MeshState()
    old.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO})
    new.claim({"topic": 1, "origin": "b", "monitor": "m2", "info": INFO})
    new.merge(old.snapshot())
    assert new.holders == {0: "a", 1: "b"}


def test_a_stale_leave_from_a_monitor_the_app_has_moved_away_from_changes_nothing() -> None:
    state = MeshState()
    state.claim({"topic": 2, "origin": "a", "monitor": "m1", "info": INFO})
    state.claim({"topic": 2, "origin": "a", "monitor": "m2", "replaces": "m1", "info": INFO})  # moved
    assert state.leave("a", owner="m1") is None  # m1 woke up and saw its old socket close
    assert state.holders == {2: "a"} and state.connections["a"].monitor == "m2"
    assert state.leave("a", owner="m2") is not None


@pytest.mark.parametrize(
    "bad",
    [{"topic": 288}, {"topic": -1}, {"info": "not a map"}, {"info": {"name": "x"}}, {"topic": "zero"}],
)
def test_a_malformed_claim_changes_nothing(bad: dict[str, object]) -> None:
    state = MeshState()
    with pytest.raises((ValueError, KeyError, TypeError)):
        state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO} | bad)
    assert state.holders == {} and state.connections == {}


async def test_an_app_asking_for_a_topic_another_app_holds_is_given_another() -> None:
    """A resumed app asks for the virtual topic it had; if somebody holds it now, it gets a free one."""
    config = AppConfig.load(argv=[], environ={}, overrides={"monitor.heartbeat": "0.05"})
    platform = Platform(config, name="presence-monitor", functions=[])
    monitor = PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(32, 288), groups=10)
    await monitor.start()
    try:
        hello = {**INFO, "topic": "multiplex.0001-007"}
        assert await monitor._admit("20261125" + "a" * 32, hello) == 7  # free: granted
        assert await monitor._admit("20261125" + "b" * 32, hello) == 0  # held: the first never-used one
        assert monitor.state.holders == {7: "20261125" + "a" * 32, 0: "20261125" + "b" * 32}
    finally:
        await monitor.stop()


async def test_a_claim_read_before_any_heartbeat_of_its_monitor_shows_that_monitor_alive() -> None:
    """Seen in CI: two monitors started side by side, B subscribed after A's first heartbeat and read A's
    claim of an app before A's next one; taking A for dead, B let an intruder with that origin take it over.
    The claim itself shows A alive."""
    broker = MemoryBroker()

    def monitor(timeout: str) -> PresenceMonitor:
        config = AppConfig.load(
            argv=[], environ={}, overrides={"monitor.heartbeat": "0.05", "monitor.timeout": timeout}
        )
        platform = Platform(config, name="presence-monitor", functions=[])
        return PresenceMonitor(platform, MemoryConnector(broker), TopicLayout(32, 288), groups=10)

    a, b = monitor("3"), monitor("0.5")
    await asyncio.gather(a.start(), b.start())
    assert a._housekeeper is not None
    a._housekeeper.cancel()  # A writes no heartbeat but the ones below
    b.state.forget(a.id)  # B never read one
    who = "20261203" + "c" * 32

    async def a_stays_alive() -> None:
        while True:
            await asyncio.sleep(0.1)
            await a._publish({"type": "monitor", "id": a.id, "time": "2026-12-03T00:00:00.000Z"})

    beating: asyncio.Task[None] | None = None
    try:
        topic = await a._admit(who, dict(INFO, topic=None))  # the lowest of A's lane among the two
        assert b.state.connections[who].monitor == a.id and b.state.holders[topic] == who
        beating = asyncio.create_task(a_stays_alive())
        with pytest.raises(Refused, match=f"already connected via monitor {a.id}"):
            await b._admit(who, dict(INFO, topic=None))
        assert b.state.connections[who].monitor == a.id and a.state.connections[who].monitor == a.id
    finally:
        if beating is not None:
            beating.cancel()
        await asyncio.gather(a.stop(), b.stop())


async def test_a_monitor_that_does_not_read_its_own_heartbeats_back_releases_nobody() -> None:
    """Cut off from the log, a monitor sees every other monitor go quiet; it must not take their apps for
    orphans (its leaves would reach the log at the heal and drop live apps). Reading the log again, and
    leading, it does release the apps of a monitor that is really gone."""
    config = AppConfig.load(argv=[], environ={}, overrides={"monitor.heartbeat": "0.05"})
    platform = Platform(config, name="presence-monitor", functions=[])
    monitor = PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(32, 288), groups=10)
    await monitor.start()
    written: list[dict[str, object]] = []

    async def cut_off(message: dict[str, object]) -> None:
        written.append(message)  # never reaches the log: the monitor reads nothing back

    try:
        monitor.state.claim({"topic": 1, "origin": "a", "monitor": "other", "info": INFO})
        monitor.state.monitors.clear()  # nothing heard from anyone, itself included, for a long while
        monitor._started -= 100
        monitor._publish = cut_off  # type: ignore[method-assign]
        await monitor._tick()
        await asyncio.sleep(0)
        assert [m["type"] for m in written] == ["monitor"], written  # its heartbeat only
        monitor.state.heartbeat({"id": monitor.id})  # its own heartbeat came back: it reads the log
        await monitor._tick()
        await asyncio.sleep(0)
        leaves = [m for m in written if m["type"] == "leave"]
        assert [(m["origin"], m["owner"]) for m in leaves] == [("a", "other")]
    finally:
        await monitor.stop()


async def test_info_answers_at_once_with_a_warning_while_the_broker_does_not_answer() -> None:
    config = AppConfig.load(argv=[], environ={}, overrides={"monitor.heartbeat": "0.05"})
    platform = Platform(config, name="presence-monitor", functions=[])
    connector = MemoryConnector(MemoryBroker())
    monitor = PresenceMonitor(platform, connector, TopicLayout(32, 288), groups=10)
    await monitor.start()

    async def silent() -> dict[str, int]:
        await asyncio.sleep(3600)  # a broker cut off by the network: no answer, no error
        return {}

    try:
        monitor.state.claim({"topic": 1, "origin": "a", "monitor": monitor.id, "info": INFO})
        connector.list_topics = silent  # type: ignore[method-assign]
        started = time.monotonic()
        info = await monitor.additional_info()
        assert time.monotonic() - started < 3
        assert info["total"]["connections"] == 1 and info["topics"] == []
        assert info["warning"].startswith("Topic list unavailable")
    finally:
        await monitor.stop()


def test_the_leader_is_the_lowest_monitor_heard_from_and_its_orphans_are_the_apps_of_the_silent() -> None:
    state = MeshState()
    assert state.leader(3.0) is None  # cut off: not even our own heartbeat came back
    for monitor in ("m2", "m1", "m3"):
        state.heartbeat({"id": monitor})
    assert state.claim({"topic": 0, "origin": "a", "monitor": "m1", "info": INFO}).won
    assert state.claim({"topic": 1, "origin": "b", "monitor": "m3", "info": INFO}).won
    assert state.leader(3.0) == "m1"
    assert state.orphans("m2", 3.0) == []
    state.monitors["m1"] = (time.monotonic() - 10.0, state.monitors["m1"][1])  # m1 fell silent
    assert state.leader(3.0) == "m2"
    assert [c.origin for c in state.orphans("m2", 3.0)] == ["a"]
    assert state.orphans("m1", 3.0) == []  # a monitor never releases its own apps as orphans


@pytest.mark.parametrize(
    ("message", "seq"),
    [
        ({"type": "alive", "seq": 0}, 0),
        ({"type": "alive", "seq": 2**53 - 1}, 2**53 - 1),
        ({"type": "alive", "seq": -1}, None),
        ({"type": "alive", "seq": 2**53}, None),
        ({"type": "alive", "seq": True}, None),
        ({"type": "alive", "seq": "1"}, None),
        ({"type": "alive"}, None),
        ({"type": "hello", "seq": 1}, None),
        ([{"type": "alive", "seq": 1}], None),
        ("alive", None),
    ],
)
def test_only_a_well_formed_alive_message_is_a_keep_alive(message: object, seq: int | None) -> None:
    if seq is None:
        with pytest.raises(ValueError, match="not a keep-alive"):
            keep_alive_seq(message)
    else:
        assert keep_alive_seq(message) == seq
