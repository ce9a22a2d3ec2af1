"""The direct path's parts without processes: the address an app advertises, the admission handshake, and
a link's records over an in-memory socket pair."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from meshkit import AppConfig, AppError, EventEnvelope
from meshkit.config import ConfigError
from meshkit.core import Buffer, envelope_from_map
from meshkit.http._direct import DIRECT_PATH
from meshkit.mesh import DIRECT_PATH as MESH_DIRECT_PATH
from meshkit.mesh import DirectLinks, Link, LinkClosed, direct_address, direct_listener
from meshkit.mesh._admission import READY, Admission, Refused, pack
from meshkit.mesh._frames import event_record, parse
from meshkit.mesh._link import DIRECT_SEGMENT_SIZE
from meshkit.mesh._vouched import VouchedKeys
from meshkit.security import Identity, MeshKeys, public_key

A, B, C = ("20261202" + c * 32 for c in "abc")


def config(**values: str) -> AppConfig:
    return AppConfig.load(argv=[], environ={}, overrides={k.replace("_", "."): v for k, v in values.items()})


# -- the address ---------------------------------------------------------------------------------------------


def test_the_broker_is_the_default_and_direct_listens_on_framed_tcp_where_the_app_serves() -> None:
    assert direct_address(config()) is None
    assert direct_address(config(mesh_transport="broker")) is None
    assert direct_listener(config()) is None
    served = config(mesh_transport="direct", server_host="127.0.0.1", server_port="8085")
    assert direct_address(served) == "tcp://127.0.0.1:0"  # :0 until the listener has its port
    assert direct_listener(served) == ("127.0.0.1", 0)
    anywhere = config(mesh_transport="DIRECT", server_host="0.0.0.0", mesh_direct_port="9001")
    assert direct_address(anywhere) == f"tcp://{socket.gethostbyname(socket.gethostname())}:9001"
    assert direct_listener(anywhere) == ("0.0.0.0", 9001)
    assert DIRECT_PATH == MESH_DIRECT_PATH  # the websocket endpoint serves where the mesh says peers dial


@pytest.mark.parametrize(
    ("setting", "advertised"),
    [
        ("10.0.0.7:9000", "tcp://10.0.0.7:9000"),
        ("my-app.default.svc:8081", "tcp://my-app.default.svc:8081"),
        ("::1:8081", "tcp://[::1]:8081"),
        ("tls://pod:8443", "tls://pod:8443"),
        ("http://pod:8080", "ws://pod:8080/api/mesh/direct"),
        ("https://pod:8443", "wss://pod:8443/api/mesh/direct"),
        ("ws://pod:8080", "ws://pod:8080/api/mesh/direct"),
        ("wss://gateway:443/mesh/a", "wss://gateway:443/mesh/a"),
    ],
)
def test_mesh_direct_address_is_host_port_a_framed_url_or_a_websocket_url(
    setting: str, advertised: str
) -> None:
    assert direct_address(config(mesh_transport="direct", mesh_direct_address=setting)) == advertised


def test_an_app_serving_tls_takes_framed_tls_and_listens_on_its_address_port_unless_told() -> None:
    values = {"mesh_transport": "direct", "mesh_direct_address": "pod.ns.svc:8443", "server_host": "0.0.0.0"}
    tls = config(**values, server_ssl_certfile="/etc/tls/tls.crt")
    assert direct_address(tls) == "tls://pod.ns.svc:8443"
    assert direct_listener(tls) == ("0.0.0.0", 8443)
    behind_nat = config(**values, mesh_direct_port="7000", mesh_direct_host="10.1.2.3")
    assert direct_listener(behind_nat) == ("10.1.2.3", 7000)  # the address is the NAT's, not ours
    assert direct_listener(config(mesh_transport="direct", mesh_direct_address="ws://pod:8080")) is None


@pytest.mark.parametrize(
    "values",
    [
        {"mesh_transport": "kafka"},
        {"mesh_transport": "direct", "mesh_direct_address": "no-port"},
        {"mesh_transport": "direct", "mesh_direct_address": "host:http"},
        {"mesh_transport": "direct", "mesh_direct_address": "udp://host:9000"},
        {"mesh_transport": "direct", "mesh_direct_port": "70000"},
    ],
)
def test_a_bad_transport_or_address_is_refused_at_start(values: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"mesh\.(transport|direct\.address|direct\.port)"):
        direct_address(config(**values))


# -- admission -----------------------------------------------------------------------------------------------


def admissions(vouch: bool = True) -> tuple[Admission, Admission, dict[str, Identity]]:
    identities = {origin: Identity() for origin in (A, B, C)}
    vouched = {origin: VouchedKeys() for origin in (A, B)}
    if vouch:
        for keys in vouched.values():
            for origin, identity in identities.items():
                keys.vouch(origin, public_key(identity.public_key))
    return Admission(A, identities[A], vouched[A]), Admission(B, identities[B], vouched[B]), identities


def test_a_handshake_between_vouched_peers_admits_both_ways() -> None:
    caller, callee, _ = admissions()
    hello, mine = caller.hello(B)
    origin, theirs, callee_nonce, challenge = callee.challenge(hello)
    assert (origin, theirs) == (A, mine)
    callee.admit(origin, theirs, callee_nonce, caller.proof(B, mine, challenge))


def test_an_unvouched_caller_is_refused_before_any_proof() -> None:
    caller, _, _ = admissions()
    _, stranger_side, _ = admissions(vouch=False)
    hello, _ = caller.hello(B)
    with pytest.raises(Refused, match="not vouched for"):
        stranger_side.challenge(hello)


def test_a_caller_signing_with_another_key_than_its_origins_is_refused() -> None:
    caller, callee, identities = admissions()
    impostor = Admission(A, identities[C], caller.vouched)  # claims A, holds C's key
    hello, mine = impostor.hello(B)
    origin, theirs, callee_nonce, challenge = callee.challenge(hello)
    with pytest.raises(Refused, match="the proof is not signed by the key vouched for"):
        callee.admit(origin, theirs, callee_nonce, impostor.proof(B, mine, challenge))


def test_a_callee_answering_for_another_origin_or_with_another_key_is_refused() -> None:
    caller, callee, identities = admissions()
    hello, mine = caller.hello(B)
    *_, challenge = callee.challenge(hello)
    with pytest.raises(Refused, match="answered for"):
        caller.proof(C, mine, challenge)  # we dialed C's address; B answered
    forged = Admission(B, identities[C], callee.vouched)
    *_, challenge = forged.challenge(hello)
    with pytest.raises(Refused, match="not signed by the key vouched for"):
        caller.proof(B, mine, challenge)


def test_a_proof_from_another_handshake_is_not_admitted() -> None:
    caller, callee, _ = admissions()
    hello, mine = caller.hello(B)
    origin, theirs, _, challenge = callee.challenge(hello)
    recorded = caller.proof(B, mine, challenge)
    origin, theirs, second_nonce, _ = callee.challenge(hello)  # the same hello replayed: a new nonce
    with pytest.raises(Refused):
        callee.admit(origin, theirs, second_nonce, recorded)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\xc1", "undecodable"),
        (b"\x93\x01\x02\x03", "not a map"),
        (pack({"type": "proof"}), "expected a hello"),
        (pack({"type": "hello", "origin": "x" * 40, "to": B, "nonce": "n"}), "valid origin"),
        (pack({"type": "hello", "origin": A, "to": C, "nonce": "n"}), "not this app"),
        (pack({"type": "hello", "origin": A, "to": B, "nonce": 7}), "valid nonce"),
        (pack({"type": "hello", "origin": A, "to": B, "nonce": "n" * 65}), "valid nonce"),
        (b"\x80" + b"x" * 5000, "short binary"),
        (pack({"type": "refused", "message": "go away"}), "refused by the peer: go away"),
    ],
)
def test_a_bad_hello_is_refused_with_its_reason(message: bytes, reason: str) -> None:
    _, callee, _ = admissions()
    with pytest.raises(Refused, match=reason):
        callee.challenge(message)


# -- a link --------------------------------------------------------------------------------------------------


class Pipe:
    """One end of an in-memory message connection."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.other: Pipe | None = None
        self.sent: list[bytes] = []

    async def send(self, message: bytes) -> None:
        assert self.other is not None
        self.sent.append(message)
        self.other.inbox.put_nowait(message)

    async def send_pieces(self, pieces: tuple[bytes, Buffer]) -> None:
        await self.send(b"".join(pieces))

    async def recv(self) -> bytes:
        message = await self.inbox.get()
        if message is None:
            raise LinkClosed("closed (1000)")
        return message

    async def close(self, code: int, reason: str) -> None:
        assert self.other is not None
        self.other.inbox.put_nowait(None)


def pair() -> tuple[Pipe, Pipe]:
    left, right = Pipe(), Pipe()
    left.other, right.other = right, left
    return left, right


def link_between(socket: Pipe, arrived: list[bytes], peer: str = B) -> Link:
    return Link(
        peer,
        socket,
        dialed=True,
        inbox=f"@{A}",
        reply_topic=lambda: "multiplex.0001-000",
        deliver=lambda record, via: arrived.append(record),
        max_event_bytes=8 * 1024 * 1024,
    )


async def test_what_is_sent_in_one_loop_turn_leaves_as_one_message_and_arrives_in_order() -> None:
    left, right = pair()
    received: list[bytes] = []
    arrived = asyncio.Event()

    def deliver(message: bytes, via: str) -> None:
        assert via == A  # the peer the link admitted: the request's proven caller (access.md)
        received.append(message)
        arrived.set()

    sender = link_between(left, [])
    receiver = Link(
        A, right, dialed=False, inbox=f"@{B}", reply_topic=lambda: None, deliver=deliver, max_event_bytes=1024
    )
    tasks = [asyncio.create_task(sender.run()), asyncio.create_task(receiver.run())]
    for n in range(100):
        sender.send_event(EventEnvelope("hello.world", n, cid=f"c{n}", reply_to=f"@{A}"))
    await asyncio.wait_for(arrived.wait(), 2)
    assert len(left.sent) == 1  # one batch record
    batch = parse(received[0])
    assert batch["type"] == "batch" and len(batch["records"]) == 100
    events = [envelope_from_map(parse(record)["event"]) for record in batch["records"]]
    assert [event.body for event in events] == list(range(100))
    assert {parse(record)["origin"] for record in batch["records"]} == {B}  # addressed to the peer
    assert sender.requests == {f"c{n}" for n in range(100)}  # what it carried, should it break
    await left.close(1000, "done")  # the receiver's end hears the close; the sender's is closed by it
    reasons = await asyncio.wait_for(asyncio.gather(tasks[1]), 2)
    assert reasons == ["closed (1000)"] and receiver.closed
    tasks[0].cancel()


async def test_a_large_event_crosses_in_segments_and_one_over_max_event_size_is_refused() -> None:
    left, _ = pair()
    sender = link_between(left, [])
    sender.send_event(EventEnvelope("hello.world", b"x" * (3 * DIRECT_SEGMENT_SIZE)))
    records = sender._outgoing
    assert len(records) == 4 and all(parse(r)["type"] == "segment" for r in records)
    with pytest.raises(AppError) as refused:
        sender.send_event(EventEnvelope("hello.world", b"x" * (9 * 1024 * 1024)))
    assert refused.value.status == 413


async def test_a_large_bytes_body_leaves_beside_its_head_alone_and_reads_as_event_record_makes_it() -> None:
    left, right = pair()
    received: list[bytes] = []
    sender = link_between(left, [])
    receiver = link_between(right, received, peer=A)
    tasks = [asyncio.create_task(sender.run()), asyncio.create_task(receiver.run())]
    large = EventEnvelope("hello.world", os.urandom(200 * 1024), {"k": "v"}, cid="c1", reply_to=f"@{A}")
    large.trace_id, large.deadline = "t1", time.perf_counter() + 5
    sender.send_event(EventEnvelope("hello.world", 1))
    sender.send_event(large)
    sender.send_event(EventEnvelope("hello.world", 2))
    _, body = sender._outgoing[1]  # type: ignore[misc]
    assert body is large.body  # never copied into a record
    await wait_until_async(lambda: len(received) == 3)
    assert len(left.sent) == 3  # small, large, small: the large one alone, between the others
    whole = parse(received[1])
    expected = parse(event_record(B, large, "multiplex.0001-000"))
    assert 0 <= whole["event"].pop("ttl") - expected["event"].pop("ttl") < 1000  # ms left: read earlier
    assert whole == expected
    assert sender.requests == {"c1"}
    for task in tasks:
        task.cancel()
    small_limit = Link(
        B, left, dialed=True, inbox="@a", reply_topic=lambda: None, deliver=print, max_event_bytes=100_000
    )
    for too_large in (b"x" * 150_000, b"x" * 600_000):  # the pieces and the one-record path both check
        with pytest.raises(AppError) as refused:
            small_limit.send_event(EventEnvelope("hello.world", too_large))
        assert refused.value.status == 413


async def wait_until_async(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not met in time"
        await asyncio.sleep(0.01)


async def test_a_closed_link_refuses_to_send_and_prunes_answered_requests() -> None:
    left, _ = pair()
    link = link_between(left, [])
    for n in range(200):
        link.send_event(EventEnvelope("hello.world", n, cid=f"c{n}", reply_to=f"@{A}"))
    link.prune(lambda cid: cid in {"c1", "c2"})
    assert link.requests == {"c1", "c2"}
    await link.close()
    with pytest.raises(AppError) as closed:
        link.send_event(EventEnvelope("hello.world", 1))
    assert closed.value.status == 503


def test_ready_is_a_fixed_message() -> None:
    data: Any = msgpack.unpackb(READY)
    assert data == {"type": "ready"}


# -- two apps' links over a real framed listener -------------------------------------------------------------


def links_of(origin: str, identities: dict[str, Identity], key: str) -> DirectLinks:
    return DirectLinks(
        Admission(origin, identities[origin], VouchedKeys()),
        MeshKeys(config(mesh_api_key=key)),
        address="tcp://127.0.0.1:0",
        deliver=lambda record, via: None,
        on_lost=lambda origin, cids, why: None,
        inbox=f"@{origin}",
        reply_topic=lambda: None,
        max_event_bytes=1 << 20,
        connect_timeout=2.0,
        listener=("127.0.0.1", 0),
    )


async def test_a_dial_refused_until_the_peer_hears_of_us_is_info_once_then_a_warning_both_sides_then_admitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identities = {A: Identity(), B: Identity()}
    caller, callee = links_of(A, identities, "k"), links_of(B, identities, "k")
    caller.admission.vouched.vouch(B, public_key(identities[B].public_key))
    await callee.start()
    assert callee.address is not None and not callee.address.endswith(":0")  # the port it was given
    caplog.set_level(logging.INFO, "meshkit.mesh.direct")
    try:
        for expected in (logging.INFO, logging.WARNING):  # B has not heard of A: expected once, not twice
            caplog.clear()
            assert await caller._open(B, callee.address) is None
            assert "not vouched for by a presence monitor (yet)" in caller.failures[B]
            mine = [r for r in caplog.records if "not admitted" in r.getMessage()]
            assert [r.levelno for r in mine] == [expected]
            # the callee's line for the same refusal: info the first time too, then a warning
            theirs = [r for r in caplog.records if "Refused a direct connection" in r.getMessage()]
            assert [r.levelno for r in theirs] == [expected], [r.getMessage() for r in theirs]
        callee.admission.vouched.vouch(A, public_key(identities[A].public_key))
        socket = await caller._open(B, callee.address)
        assert socket is not None  # admitted both ways
        await socket.close(1000, "done")
        # a wrong mesh key: refused at the door (close 4403), said by the callee
        stranger = links_of(A, identities, "wrong")
        stranger.admission.vouched.vouch(B, public_key(identities[B].public_key))
        caplog.clear()
        assert await stranger._open(B, callee.address) is None
        assert "4403 missing or wrong mesh key" in stranger.failures[B]
        assert any("missing or wrong mesh key" in r.getMessage() for r in caplog.records)
        # before admission a frame is at most a handshake's 4096 bytes: a larger one ends it (1009)
        port = int(callee.address.rpartition(":")[2])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((5000).to_bytes(4, "big") + b"x" * 5000)
        closing = await asyncio.wait_for(reader.read(), 5)
        assert closing[4:7] == b"\x03" + (1009).to_bytes(2, "big"), closing
        writer.close()
    finally:
        await callee.close()
        await asyncio.sleep(0.05)
