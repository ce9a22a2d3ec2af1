"""Caller proofs (meshkit/mesh/_callers.py, docs/protocol/access.md): a request's signed word of who sent it
holds only for that request, to that recipient, once, under the key the monitors vouched for."""

from __future__ import annotations

import base64

import msgpack
import pytest

from meshkit.core import EventEnvelope, encode
from meshkit.mesh import CallerProofs, NotProven, Peer, RoutingTable, TopicLayout
from meshkit.mesh._vouched import VouchedKeys
from meshkit.security import Identity, public_key

CALLER = "20261202" + "ca" * 16
CALLEE = "20261202" + "ee" * 16
TOPIC = TopicLayout(32, 288).parse("multiplex.0001-001")


def pair() -> tuple[CallerProofs, CallerProofs]:
    """The caller's and the callee's sides; each knows the other as a vouched peer."""
    caller_id, callee_id = Identity(), Identity()
    caller_keys, callee_keys = VouchedKeys(), VouchedKeys()
    caller_keys.vouch(CALLEE, public_key(callee_id.public_key))
    callee_keys.vouch(CALLER, public_key(caller_id.public_key))
    caller_table, callee_table = RoutingTable(), RoutingTable()
    caller_table.join(Peer(CALLEE, "guarded", "1", "APP", TOPIC, {"a.b"}, allow={"a.b": ["billing"]}))
    callee_table.join(Peer(CALLER, "billing", "1", "APP", TOPIC, {"x.y"}))
    return (
        CallerProofs(CALLER, caller_id, caller_keys, caller_table),
        CallerProofs(CALLEE, callee_id, callee_keys, callee_table),
    )


def request(body: object = {"amount": 3}) -> EventEnvelope:
    return EventEnvelope("a.b", body, reply_to=f"@{CALLER}", cid="c1")


def test_a_request_to_a_restricted_route_is_signed_and_names_its_caller() -> None:
    caller, callee = pair()
    assert caller.restricted(CALLEE, "a.b") and caller.restricted(CALLEE, f"a.b@{CALLEE}")
    assert not caller.restricted(CALLEE, "c.d") and not caller.restricted(CALLER, "a.b")
    event = request()
    caller.sign(event, CALLEE)
    callee.identify(event, None)
    assert (event.caller, event.caller_origin) == ("billing", CALLER)


def test_over_a_direct_link_the_link_names_the_caller() -> None:
    _, callee = pair()
    event = request()
    callee.identify(event, CALLER)
    assert event.caller == "billing"


@pytest.mark.parametrize(
    "tamper",
    ["body", "to", "id", "recipient", "replay", "unvouched", "garbage"],
)
def test_a_proof_that_does_not_hold_leaves_the_caller_unproven(
    tamper: str, caplog: pytest.LogCaptureFixture
) -> None:
    caller, callee = pair()
    event = request()
    caller.sign(event, "20261202" + "99" * 16 if tamper == "recipient" else CALLEE)
    if tamper == "body":
        event.body = {"amount": 3000}
    elif tamper == "to":
        event.to = "other.route"
    elif tamper == "id":
        event.id = "another-id"
    elif tamper == "replay":
        callee.identify(request_copy := _copy(event), None)
        assert request_copy.caller == "billing"
    elif tamper == "unvouched":
        callee.vouched.forget(CALLER)
    elif tamper == "garbage":
        event.proof = {"origin": CALLER, "ts": "x", "seq": -1, "sig": 12}
    callee.identify(event, None)
    assert event.caller is None, tamper
    assert "its caller proof does not hold" in caplog.text


def _copy(event: EventEnvelope) -> EventEnvelope:
    clone = event.copy()
    clone.caller = clone.caller_origin = None
    return clone


def test_an_http_caller_header_holds_for_the_bytes_posted_once() -> None:
    caller, callee = pair()
    posted = encode(request())
    header = caller.header(posted)
    event = request()
    callee.identify_http(event, header, posted)
    assert event.caller == "billing"
    with pytest.raises(NotProven, match="a replay"):
        callee.identify_http(request(), header, posted)
    with pytest.raises(NotProven, match="not signed"):
        callee.identify_http(request(), caller.header(posted), posted + b"x")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "not base64!",
        base64.b64encode(b"\xc1").decode(),
        base64.b64encode(msgpack.packb([1])).decode(),
        "A" * 401,
    ],
)
def test_a_garbage_http_caller_header_is_refused_clearly(header: str) -> None:
    _, callee = pair()
    with pytest.raises(NotProven):
        callee.identify_http(request(), header, b"")
