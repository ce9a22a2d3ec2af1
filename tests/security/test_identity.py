"""Each app speaks only for itself: control messages are signed with the app's own Ed25519 key, and a peer
believes a join, route change or answer only under the key the presence monitor vouched for that origin.
An app has gone when a monitor says so, never when somebody writes "leave" on the broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from meshkit import AppConfig, EventEnvelope, Platform
from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.mesh import MeshNode, TopicLayout
from meshkit.mesh._frames import EVERYONE, control_record
from meshkit.mesh._vouched import MAX_HELD, VouchedKeys
from meshkit.security import Identity, MeshKeys, Stamp, public_key, signed_by
from meshkit.testing import TestMesh
from presence_server._monitor import PresenceMonitor
from tests.support.eventually import eventually
from tests.support.identities import PUBLIC_KEY, join

LAMBDA = "20261125" + "1a" * 16
OTHER = "20261125" + "2b" * 16


@pytest.fixture
async def node() -> AsyncIterator[MeshNode]:
    """An app alone in a test mesh; the tests play its peers and its presence monitor by hand."""
    async with TestMesh({"presence.recheck": "0.2"}) as mesh:
        yield mesh.node(await mesh.app("rest-example", []))


def test_a_signature_covers_the_whole_message_and_only_its_signer_can_make_it() -> None:
    me, somebody_else = Identity(), Identity()
    signed = me.sign_control(join(LAMBDA))
    mine = public_key(me.public_key)
    assert signed_by(mine, signed)
    assert not signed_by(mine, join(LAMBDA))  # unsigned
    assert not signed_by(mine, somebody_else.sign_control(join(LAMBDA)))
    assert not signed_by(mine, {**signed, "routes": ["hello.pojo", "admin.drop"]})  # tampered
    assert not signed_by(mine, {**signed, "sig": "not base64 at all!"})
    assert not signed_by(mine, {**signed, "sig": 42})


@pytest.mark.parametrize(
    "text",
    ["", "short", PUBLIC_KEY[:-1], "!" * 44, 42, None],
    ids=["empty", "short", "43", "44!", "int", "None"],
)
def test_a_public_key_must_be_32_bytes_of_base64(text: object) -> None:
    with pytest.raises(ValueError):
        public_key(text)


async def test_a_join_waits_for_the_monitor_to_vouch_for_its_key(node: MeshNode) -> None:
    lambda_app = Identity()
    node._on_control(lambda_app.sign_control(join(LAMBDA)))  # the broker was quicker than the monitor
    assert node.table.origins("hello.pojo") == []
    node._on_notice({"type": "member", "origin": LAMBDA, "key": lambda_app.public_key})
    assert node.table.origins("hello.pojo") == [LAMBDA]


async def test_nobody_can_join_as_an_origin_vouched_for_under_another_key(
    node: MeshNode, caplog: pytest.LogCaptureFixture
) -> None:
    node._on_notice({"type": "member", "origin": LAMBDA, "key": Identity().public_key})
    node._on_control(Identity().sign_control(join(LAMBDA)))
    assert node.table.origins("hello.pojo") == []
    assert f"Refused a join control message for {LAMBDA}: not signed by that app's key" in caplog.text


async def test_no_member_can_change_or_drop_another_members_routes(
    node: MeshNode, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_app, intruder = Identity(), Identity()
    node._on_notice({"type": "member", "origin": LAMBDA, "key": lambda_app.public_key})
    node._on_control(lambda_app.sign_control(join(LAMBDA)))
    forged_routes = intruder.sign_control({"type": "routes", "origin": LAMBDA, "remove": ["hello.pojo"]})
    node._on_control(forged_routes)
    node._on_control({"type": "leave", "origin": LAMBDA})  # signed or not: leaves come from the monitor
    node._on_control(MeshKeys(node.platform.config).sign({"type": "leave", "origin": LAMBDA}))
    assert node.table.origins("hello.pojo") == [LAMBDA]
    assert "Refused a routes control message" in caplog.text
    assert "Refused a leave control message" in caplog.text
    # the app itself may change its routes
    node._on_control(lambda_app.sign_control({"type": "routes", "origin": LAMBDA, "add": ["hello.list"]}))
    assert node.table.origins("hello.list") == [LAMBDA]


async def test_a_peer_is_gone_when_the_monitor_says_so_and_its_requests_fail_at_once(node: MeshNode) -> None:
    lambda_app = Identity()
    node._on_notice({"type": "member", "origin": LAMBDA, "key": lambda_app.public_key})
    node._on_control(lambda_app.sign_control(join(LAMBDA)))
    sent: list[EventEnvelope] = []
    node.transport.send_event = lambda topic, origin, event, batch=False: sent.append(event)  # type: ignore[method-assign]  # never answers
    pending = asyncio.ensure_future(node.platform.call(EventEnvelope("hello.pojo", 1), timeout=30))
    await eventually(lambda: sent, what="the request on its way to the peer")
    node._on_notice({"type": "gone", "origin": LAMBDA, "reason": "closed (1000)"})
    reply = await asyncio.wait_for(pending, 1)
    assert reply.status == 503 and "left before replying" in str(reply.body)
    assert node.table.origins("hello.pojo") == [] and node.vouched.key(LAMBDA) is None
    node._on_control(lambda_app.sign_control(join(LAMBDA)))  # a replayed join of the gone app is not believed
    assert node.table.origins("hello.pojo") == []


async def test_a_new_monitors_list_replaces_the_old_one_after_a_grace(node: MeshNode) -> None:
    lambda_app, other_app = Identity(), Identity()
    for origin, identity in ((LAMBDA, lambda_app), (OTHER, other_app)):
        node._on_notice({"type": "member", "origin": origin, "key": identity.public_key})
        node._on_control(identity.sign_control(join(origin)))
    # moved to a monitor whose list lacks OTHER (it left while we moved): dropped after the grace
    node._members({LAMBDA: lambda_app.public_key, "bad": "not a key"})
    assert sorted(node.table.origins("hello.pojo")) == sorted([LAMBDA, OTHER])
    await eventually(
        lambda: node.table.origins("hello.pojo") == [LAMBDA], what="OTHER dropped after the grace"
    )


async def test_a_new_monitors_late_vouch_within_the_grace_keeps_the_peer(node: MeshNode) -> None:
    lambda_app, other_app = Identity(), Identity()
    for origin, identity in ((LAMBDA, lambda_app), (OTHER, other_app)):
        node._on_notice({"type": "member", "origin": origin, "key": identity.public_key})
        node._on_control(identity.sign_control(join(origin)))
    node._members({})  # the new monitor's log had not reached their claims yet...
    node._on_notice({"type": "member", "origin": LAMBDA, "key": lambda_app.public_key})  # ...now LAMBDA's
    # OTHER, never vouched for again, marks the recheck that must keep LAMBDA: it drops OTHER
    await eventually(lambda: OTHER not in node.table.peers, what="the recheck after the grace")
    assert node.table.origins("hello.pojo") == [LAMBDA]


async def test_bad_notices_from_the_monitor_are_logged_and_change_nothing(
    node: MeshNode, caplog: pytest.LogCaptureFixture
) -> None:
    for notice in (
        {"type": "member", "origin": LAMBDA, "key": "garbage"},
        {"type": "member", "origin": "not-an-origin", "key": PUBLIC_KEY},
        {"type": "gone"},
        {"type": "surprise", "origin": LAMBDA},
    ):
        node._on_notice(notice)
    assert node.vouched.origins() == set()
    assert caplog.text.lower().count("presence monitor") == 4


def test_messages_from_unvouched_origins_are_held_briefly_and_boundedly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vouched = VouchedKeys(hold_seconds=0.05)
    held = [vouched.hold(OTHER, {"type": "join", "n": n}) for n in range(MAX_HELD + 5)]
    assert held.count(True) == MAX_HELD  # the rest are refused, not queued without end
    assert not vouched.hold(OTHER, {"type": "join", "routes": ["x" * 70_000]})  # too large to keep
    time.sleep(0.06)  # past hold_seconds: the expiry is what is tested here
    assert vouched.hold(LAMBDA, {"type": "join"})  # the expired ones made room
    assert f"Dropped {MAX_HELD} control messages from {OTHER}" in caplog.text
    assert vouched.vouch(LAMBDA, public_key(PUBLIC_KEY)) == [{"type": "join"}]


# -- the monitors' log: its own secret --------------------------------------------------------------------


def monitor_with(properties: dict[str, str]) -> PresenceMonitor:
    config = AppConfig.load(argv=[], environ={}, overrides={"cloud.connector": "none", **properties})
    platform = Platform(config, name="presence-monitor", functions=[])
    return PresenceMonitor(platform, MemoryConnector(MemoryBroker()), TopicLayout(32, 288), groups=10)


def test_an_app_holding_the_mesh_key_cannot_write_the_monitors_log(caplog: pytest.LogCaptureFixture) -> None:
    secrets = {"mesh.api.key": "app-key", "mesh.monitor.secret": "monitors-only"}
    monitor = monitor_with(secrets)
    m1 = Stamp()  # another monitor's stamps (signing.md#replay)
    info = {"name": "a", "version": "1", "personality": "APP", "group": 1, "created": "x", "key": PUBLIC_KEY}
    claim = m1({"type": "claim", "topic": 3, "origin": LAMBDA, "monitor": "m1", "info": info, "by": "m1"})
    monitor._on_record(control_record(EVERYONE, monitor.log_keys.sign(claim)))
    assert LAMBDA in monitor.state.connections
    app_keys = MeshKeys(monitor.platform.config)  # what every app holds
    leave = m1(
        {"type": "leave", "origin": LAMBDA, "monitor": "m1", "owner": "m1", "reason": "forged", "by": "m1"}
    )
    monitor._on_record(control_record(EVERYONE, app_keys.sign(leave)))
    assert LAMBDA in monitor.state.connections
    assert (
        "Skipped a bad record on service.monitor partition 0: a 'leave' message without a valid"
        in caplog.text
    )
    monitor._on_record(control_record(EVERYONE, monitor.log_keys.sign(leave)))
    assert LAMBDA not in monitor.state.connections


def test_a_monitor_without_its_own_secret_says_the_mesh_key_guards_its_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor_with({"mesh.api.key": "app-key"})
    assert "mesh.monitor.secret is not set" in caplog.text
    caplog.clear()
    monitor_with({"mesh.api.key": "app-key", "mesh.monitor.secret": "monitors-only"})
    assert "mesh.monitor.secret" not in caplog.text


# -- what a monitor pushes to its apps ---------------------------------------------------------------------


async def test_notices_go_to_the_apps_of_the_group_and_a_reader_that_never_reads_is_let_go() -> None:
    from presence_server._sessions import MAX_PENDING_NOTICES, Session, Sessions

    sessions = Sessions()
    for origin, group in ((LAMBDA, 1), (OTHER, 1), ("elsewhere", 2)):
        sessions[origin] = Session(None, 0.0, group)  # type: ignore[arg-type]  # no socket: nothing is sent
    overflowed: list[Session] = []
    notice = {"type": "member", "origin": LAMBDA, "key": PUBLIC_KEY}
    sessions.notify(1, LAMBDA, notice, overflowed.append)
    assert [s.notices.qsize() for s in sessions.values()] == [0, 1, 0]  # not to itself, not to group 2
    for _ in range(MAX_PENDING_NOTICES):
        sessions.notify(1, LAMBDA, notice, overflowed.append)
    assert overflowed == [sessions[OTHER]]
