"""Stamps and the replay guard: a control message seen before, or stamped outside the window, is refused
(docs/protocol/signing.md#replay)."""

from __future__ import annotations

import pytest

from meshkit.mesh._vouched import VouchedKeys
from meshkit.security import Identity, ReplayGuard, Stamp

ORIGIN = "20261202" + "ab" * 16


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_stamp_numbers_each_message_of_its_sender_and_says_when_in_milliseconds() -> None:
    clock = Clock(1_800_000_000.25)
    stamp = Stamp(clock)
    first, second = stamp({"type": "routes"}), stamp({"type": "routes"})
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["ts"] == 1_800_000_000_250 and type(first["ts"]) is int


def test_a_message_is_taken_once_and_refused_when_seen_again() -> None:
    clock = Clock()
    stamp, guard = Stamp(clock), ReplayGuard(clock=clock)
    message = stamp({"type": "join"})
    assert guard.check(ORIGIN, message) is None
    assert guard.check(ORIGIN, message) == "its seq 1 was seen before"
    assert guard.check("20261202" + "cd" * 16, message) is None  # numbers are per sender


def test_numbers_may_arrive_out_of_order_and_with_gaps() -> None:
    clock = Clock()
    stamp, guard = Stamp(clock), ReplayGuard(clock=clock)
    one, two, three, four = (stamp({"n": n}) for n in range(4))
    for message in (three, one, four):  # two went to another app
        assert guard.check(ORIGIN, message) is None
    assert guard.check(ORIGIN, two) is None
    assert guard.check(ORIGIN, one) is not None


@pytest.mark.parametrize(("shift", "when"), [(-121.0, "ago"), (121.0, "ahead")])
def test_a_message_stamped_outside_the_window_is_refused(shift: float, when: str) -> None:
    clock = Clock()
    message = Stamp(Clock(clock.now + shift))({"type": "routes"})
    refused = ReplayGuard(clock=clock).check(ORIGIN, message)
    assert refused == f"it was stamped 121 s {when}, outside the 120 s window"
    assert ReplayGuard(clock=clock).check(ORIGIN, Stamp(Clock(clock.now - 119))({})) is None


@pytest.mark.parametrize(
    "stamps",
    [
        {},
        {"ts": 1},
        {"seq": 1},
        {"ts": "1", "seq": 1},
        {"ts": 1, "seq": 0},
        {"ts": 1, "seq": True},
        {"ts": 1.5, "seq": 1},
        {"ts": 1, "seq": 2**63},
    ],
)
def test_a_message_without_a_valid_stamp_is_refused(stamps: dict[str, object]) -> None:
    assert ReplayGuard().check(ORIGIN, {"type": "join", **stamps}) == "it has no ts and seq stamp"


def test_below_the_numbers_kept_everything_counts_as_seen() -> None:
    clock = Clock()
    stamp, guard = Stamp(clock), ReplayGuard(kept=4, clock=clock)
    messages = [stamp({}) for _ in range(7)]
    late = messages.pop(1)  # seq 2, delayed
    for message in messages[:5]:  # 1, 3, 4, 5, 6: 1 falls out, the floor is 1
        assert guard.check(ORIGIN, message) is None
    assert guard.check(ORIGIN, messages[0]) == "its seq 1 was seen before"
    assert guard.check(ORIGIN, messages[5]) is None  # 7: 3 falls out, the floor is 3
    assert guard.check(ORIGIN, late) == "its seq 2 was seen before"  # never taken, but below the floor


def test_a_sender_silent_for_twice_the_window_is_forgotten_and_forget_forgets() -> None:
    clock = Clock()
    guard = ReplayGuard(clock=clock)
    guard.check(ORIGIN, Stamp(clock)({}))
    clock.now += 241
    others = Stamp(clock)
    for n in range(256):
        guard.check(f"sender-{n}", others({}))
    assert guard.senders() == 256  # ORIGIN pruned
    guard.forget("sender-0")
    assert guard.senders() == 255


def test_a_newcomer_refuses_a_route_change_older_than_the_answer_it_took() -> None:
    """It never saw seq 2, but the state it took (seq 3) is newer: seq 2 is superseded, replayed or late."""
    me, vouched = Identity(), VouchedKeys()
    change = me.sign_control({"type": "routes", "origin": ORIGIN, "remove": ["a"]})
    contracts = me.sign_control({"type": "contracts", "origin": ORIGIN, "contracts": {}})
    answer = me.sign_control({"type": "peer", "origin": ORIGIN})
    assert vouched.fresh(ORIGIN, answer) is None
    assert vouched.fresh(ORIGIN, change) == "its seq 1 is older than the state taken from it (seq 3)"
    assert vouched.fresh(ORIGIN, contracts) is None  # contracts are a line of their own
    newer = me.sign_control({"type": "routes", "origin": ORIGIN, "add": ["b"]})
    assert vouched.fresh(ORIGIN, newer) is None
    vouched.forget(ORIGIN)
    assert vouched.fresh(ORIGIN, change) is None  # a gone origin's record is refused unvouched, not here


def test_a_route_change_from_an_origin_never_joined_sets_no_baseline() -> None:
    me, vouched = Identity(), VouchedKeys()
    answer = me.sign_control({"type": "peer", "origin": ORIGIN})
    change = me.sign_control({"type": "routes", "origin": ORIGIN, "add": ["b"]})
    assert vouched.fresh(ORIGIN, change) is None
    assert vouched.fresh(ORIGIN, answer) is None  # it arrived late by another partition: still taken


def test_the_documented_stamp_vector() -> None:
    """signing.md#replay: the stamped routes message, its encoding, and a receiver's three answers."""
    import msgpack

    message = {
        "type": "routes",
        "origin": "202611251a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a",
        "add": ["hello.list"],
        "ts": 1795000000000,
        "seq": 1,
    }
    packed = msgpack.packb(message, use_bin_type=True)
    assert packed[0] == 0x85 and bytes.fromhex("cf 00 00 01 a1 ee 56 5e 00") in packed
    clock, sender = Clock(1795000060), str(message["origin"])
    guard = ReplayGuard(clock=clock)
    assert guard.check(sender, message) is None
    assert guard.check(sender, message) == "its seq 1 was seen before"
    clock.now = 1795000121
    assert ReplayGuard(clock=clock).check(sender, message) is not None
