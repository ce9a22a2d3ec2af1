"""The direct path (`mesh.transport=direct`) with real processes on a real broker: peers linked over one
admitted connection (framed TCP, the default, or the websocket on the HTTP port), and every way that link
can fail falling back to the broker.

The network faults are real: a TCP relay (tests.support.tcp_proxy) between the peers that the test resets,
a port that refuses, and a port that takes connections and never answers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest
import websockets
from websockets.asyncio.client import connect

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.load import Load
from tests.support.mesh_fixtures import LAMBDA_APP, REST_APP, Mesh, Node, nodes_of, path_to, routes_of
from tests.support.servers import free_port
from tests.support.tcp_proxy import SilentPort, TcpProxy, closed_port

pytestmark = pytest.mark.kafka

PEER_APP = "tests.apps.mesh_peer:app"
DIRECT = {"mesh.transport": "direct"}
ELSEWHERE = {**DIRECT, "mesh.direct.port": "0"}  # listens on a free port, not the address it advertises


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def metric(app: Node, name: str) -> float:
    """The sum of a metric family's samples in the app's /metrics."""
    text = app.get("/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def sample(app: Node, name: str, label: str) -> float:
    match = re.search(rf'^{name}\{{direction="{label}"\}} (\S+)$', app.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def linked(a: Node, b: Node, timeout: float = 15.0) -> None:
    wait_until(
        lambda: path_to(a, b) == "direct" and path_to(b, a) == "direct",
        timeout=timeout,
        what=f"a direct link between {a!r} and {b!r}",
        describe=lambda: f"{nodes_of(a)}\n{a.log()[-1500:]}\n{b.log()[-1500:]}",
    )


def call(app: Node, target: str, **params: Any) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    result: dict[str, Any] = app.get_json(f"/call/{target}?{query}")
    return result


def test_requests_and_replies_travel_the_direct_link_not_the_broker(mesh: Mesh) -> None:
    mesh.monitor()
    lam = mesh.app(LAMBDA_APP, DIRECT)
    rest = mesh.app(REST_APP, DIRECT)
    wait_until(lambda: lam.origin in routes_of(rest).get("hello.pojo", {}), timeout=10)
    linked(rest, lam)
    info = nodes_of(rest)[lam.origin]
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", info["direct_address"]), info  # the port it was given
    assert metric(rest, "meshkit_direct_links") == 1 and metric(lam, "meshkit_direct_links") == 1
    broker_before = sample(rest, "meshkit_connector_records_total", "sent")
    direct_before = sample(rest, "meshkit_direct_records_total", "sent")
    for n in range(1, 51):
        response = rest.get(f"/api/pojo/mesh/{n}")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == n
    assert sample(rest, "meshkit_direct_records_total", "sent") - direct_before >= 50
    assert sample(lam, "meshkit_direct_records_total", "received") >= 50
    # what the broker still carried meanwhile: nothing of the 50 requests (a health loopback at most)
    assert sample(rest, "meshkit_connector_records_total", "sent") - broker_before < 5
    assert "Direct connection to" in rest.log() + lam.log()


def test_large_events_cross_a_link_whole_in_one_record_and_in_segments(mesh: Mesh) -> None:
    mesh.monitor()
    a, b = mesh.app(PEER_APP, DIRECT), mesh.app(PEER_APP, DIRECT)
    linked(a, b)
    before = metric(a, "meshkit_direct_records_total")
    for size in (300_000, 3_000_000):  # its body beside its head; segments of 1 MiB, reassembled
        for caller, callee in ((a, b), (b, a)):
            outcome = call(caller, f"peer.echo@{callee.origin}", size=size, timeout=10)
            assert outcome["status"] == 200, outcome
            assert (outcome["body"]["size"], outcome["body"]["sha"]) == (size, outcome["sent"])
    assert path_to(a, b) == path_to(b, a) == "direct"
    assert metric(a, "meshkit_direct_records_total") >= before + 2 + 4  # over the link, not the broker


def test_a_peer_whose_direct_address_refuses_is_used_over_the_broker_without_a_failed_request(
    mesh: Mesh,
) -> None:
    mesh.monitor()
    # both advertise a port nothing listens on: whichever of the two dials, the dial is refused
    a = mesh.app(PEER_APP, {**ELSEWHERE, "mesh.direct.address": f"127.0.0.1:{closed_port()}"})
    b = mesh.app(PEER_APP, {**ELSEWHERE, "mesh.direct.address": f"127.0.0.1:{closed_port()}"})
    for app in (a, b):  # each learns of the other from its card
        wait_until(lambda app=app: len(routes_of(app).get("peer.echo", {})) == 2, timeout=10)
    outcomes = [call(a, f"peer.echo@{b.origin}", mark=n) for n in range(30)]
    outcomes += [call(b, f"peer.echo@{a.origin}", mark=n) for n in range(30)]
    assert [o["status"] for o in outcomes] == [200] * 60, outcomes
    wait_until(lambda: "direct_failure" in nodes_of(a)[b.origin] or "direct_failure" in nodes_of(b)[a.origin])
    assert path_to(a, b) == path_to(b, a) == "broker"
    assert "No direct connection to" in a.log() + b.log()
    assert "Connect call failed" in a.log() + b.log() or "refused" in (a.log() + b.log()).lower()


def test_when_only_one_peer_can_be_reached_the_other_dials_it_whichever_origin_is_lower(mesh: Mesh) -> None:
    mesh.monitor()
    hidden = mesh.app(PEER_APP, {**ELSEWHERE, "mesh.direct.address": f"127.0.0.1:{closed_port()}"})
    reachable = mesh.app(PEER_APP, DIRECT)
    linked(hidden, reachable)
    assert call(reachable, f"peer.echo@{hidden.origin}")["status"] == 200
    assert call(hidden, f"peer.echo@{reachable.origin}")["status"] == 200


def test_a_direct_address_that_never_answers_costs_no_request(mesh: Mesh) -> None:
    mesh.monitor()
    with SilentPort() as silent_a, SilentPort() as silent_b:
        quick = {**ELSEWHERE, "mesh.direct.connect.timeout": "1"}
        a = mesh.app(PEER_APP, {**quick, "mesh.direct.address": f"127.0.0.1:{silent_a.port}"})
        b = mesh.app(PEER_APP, {**quick, "mesh.direct.address": f"127.0.0.1:{silent_b.port}"})
        wait_until(lambda: len(routes_of(a).get("peer.echo", {})) == 2, timeout=10)
        started = time.monotonic()
        outcomes = []
        while time.monotonic() - started < 2.5:  # across the first dial's whole wait and its retry
            outcomes.append(call(a, f"peer.echo@{b.origin}", timeout=2))
            outcomes.append(call(b, f"peer.echo@{a.origin}", timeout=2))
        assert {o["status"] for o in outcomes} == {200}, outcomes
        assert max(o["elapsed"] for o in outcomes) < 1.0  # no request waited for the dial (1 s)
        wait_until(lambda: "no answer within 1 s" in a.log() + b.log(), timeout=5)
        assert path_to(a, b) == "broker"


def test_a_mixed_mesh_one_direct_one_broker_only_works_both_ways(mesh: Mesh) -> None:
    mesh.monitor()
    direct = mesh.app(PEER_APP, DIRECT)
    broker = mesh.app(PEER_APP, {"mesh.transport": "broker"})
    for app in (direct, broker):  # each learns of the other from its card
        wait_until(lambda app=app: len(routes_of(app).get("peer.echo", {})) == 2, timeout=10)
    there = [call(direct, f"peer.echo@{broker.origin}", mark=n) for n in range(20)]
    back = [call(broker, f"peer.echo@{direct.origin}", mark=n) for n in range(20)]
    assert [o["status"] for o in there + back] == [200] * 40, there + back
    assert {o["body"]["origin"] for o in there} == {broker.origin}
    assert {o["body"]["origin"] for o in back} == {direct.origin}
    assert path_to(direct, broker) == path_to(broker, direct) == "broker"
    assert "direct_address" not in nodes_of(direct)[broker.origin]
    assert nodes_of(broker)[direct.origin]["direct_address"].startswith("tcp://127.0.0.1:")
    assert metric(direct, "meshkit_direct_links") == 0


def relayed(mesh: Mesh, app: str) -> tuple[Node, TcpProxy]:
    """An app whose direct address is a relay in front of it: the test can break its links."""
    port = free_port()
    proxy = TcpProxy(port).start()
    relay = {"mesh.direct.address": f"127.0.0.1:{proxy.port}", "mesh.direct.port": str(port)}
    return mesh.app(app, {**DIRECT, **relay}), proxy


def test_a_link_broken_under_load_sends_safe_requests_again_over_the_broker_and_fails_the_rest_fast(
    mesh: Mesh,
) -> None:
    mesh.monitor()
    lam, lam_proxy = relayed(mesh, LAMBDA_APP)
    rest, rest_proxy = relayed(mesh, REST_APP)
    try:
        wait_until(lambda: lam.origin in routes_of(rest).get("hello.pojo", {}), timeout=10)
        linked(rest, lam)
        # hello.pojo is safe to retry: a break loses none of its requests
        with Load(lambda n: f"{rest.url}/api/pojo/mesh/{n}", clients=8) as load:
            load.wait_for(200)
            for _ in range(3):
                # the one link, whoever dialed it (a dial the other side refused may take a moment to end)
                wait_until(lambda: lam_proxy.open + rest_proxy.open == 1, timeout=5, what="one connection")
                assert lam_proxy.cut() + rest_proxy.cut() == 1
                load.wait_for(100)
                linked(rest, lam, timeout=10)  # dialed again
                load.wait_for(100)
        failures = load.failures()
        assert failures == [], failures[:5]
        assert "Direct connection to" in rest.log() and "lost after" in rest.log() + lam.log()
    finally:
        lam_proxy.close()
        rest_proxy.close()


def test_requests_not_safe_to_retry_fail_fast_when_their_link_breaks_and_none_hangs(mesh: Mesh) -> None:
    mesh.monitor()
    a, a_proxy = relayed(mesh, PEER_APP)
    b, b_proxy = relayed(mesh, PEER_APP)
    try:
        wait_until(lambda: len(routes_of(a).get("peer.echo", {})) == 2, timeout=10)
        linked(a, b)
        target = f"peer.echo@{b.origin}"

        def one(n: int) -> dict[str, Any]:
            return call(a, target, seconds=0.3, timeout=10, mark=n)

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(one, n) for n in range(16)]
            time.sleep(0.15)  # all 16 are in flight at b, each for 0.3 s
            assert a_proxy.cut() + b_proxy.cut() == 1
            outcomes = [f.result() for f in futures]
        failed = [o for o in outcomes if o["status"] != 200]
        assert failed, "the break came while requests were in flight; some should have failed fast"
        for outcome in failed:
            assert outcome["status"] == 503, outcome
            assert "Direct connection to" in outcome.get("error", outcome.get("body", "")), outcome
            assert outcome["elapsed"] < 2.0, outcome  # failed fast, far from its 10 s timeout
        linked(a, b, timeout=10)
        assert call(a, target)["status"] == 200
    finally:
        a_proxy.close()
        b_proxy.close()


async def rogue_handshake(url: str, headers: dict[str, str], hello: dict[str, Any]) -> dict[str, Any]:
    """Open a direct connection as an impostor would, and return the app's answer to its hello."""
    async with connect(url, additional_headers=headers, proxy=None, open_timeout=5) as ws:
        await ws.send(msgpack.packb(hello))
        answer = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        if answer.get("type") == "challenge":  # a well-formed hello: the proof is where it fails
            await ws.send(msgpack.packb({"type": "proof", "sig": "A" * 88}))
            answer = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        assert isinstance(answer, dict)
        return answer


async def test_a_peer_claiming_another_origin_on_the_direct_path_is_refused(mesh: Mesh) -> None:
    key = {"mesh.api.key": "the-mesh-key"}
    mesh.monitor(key)
    lam = mesh.app(LAMBDA_APP, {**DIRECT, **key})
    rest = mesh.app(REST_APP, {**DIRECT, **key})
    linked(rest, lam)
    url = f"ws://127.0.0.1:{lam.port}/api/mesh/direct"
    headers = {"x-mesh-key": "the-mesh-key"}
    # the mesh key, REST's origin, but not REST's private key
    hello = {"type": "hello", "origin": rest.origin, "to": lam.origin, "nonce": "ab" * 16}
    answer = await rogue_handshake(url, headers, hello)
    assert answer["type"] == "refused" and "not signed by the key vouched for" in answer["message"]
    lam.wait_for_log(f"claiming {rest.origin}: the proof is not signed by the key vouched for")
    # an origin nobody vouched for, a hello for another app, garbage
    stranger = {**hello, "origin": "20261202" + "0" * 32}
    answer = await rogue_handshake(url, headers, stranger)
    assert "not vouched for" in answer["message"]
    answer = await rogue_handshake(url, headers, {**hello, "to": rest.origin})
    assert "not this app" in answer["message"]
    async with connect(url, additional_headers=headers, proxy=None) as ws:
        await ws.send(b"\xc1 not msgpack")
        answer = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        assert answer["type"] == "refused" and "undecodable" in answer["message"]
    async with connect(url, additional_headers=headers, proxy=None) as ws:
        await ws.send("a text message")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    lam.wait_for_log("ended in its handshake: a text message on a direct connection")
    # without the mesh key, or with a wrong one: refused at the door (403), logged
    for wrong in ({}, {"x-mesh-key": "guess"}):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(url, additional_headers=wrong, proxy=None):
                pass
        assert refused.value.response.status_code == 403
    lam.wait_for_log("Refused a direct connection from 127.0.0.1")
    assert "missing or wrong mesh key" in lam.log()
    # the real link was untouched, and serves
    assert path_to(rest, lam) == "direct"
    assert rest.get("/api/pojo/mesh/7").json()["id"] == 7


def test_the_mesh_key_rotation_keeps_the_direct_path_working(mesh: Mesh) -> None:
    # mid-rotation: the new key added everywhere, and moved first at one app (it presents it) not the other
    mesh.monitor({"mesh.api.key": "old-key,new-key"})
    lam = mesh.app(LAMBDA_APP, {**DIRECT, "mesh.api.key": "old-key,new-key"})
    rest = mesh.app(REST_APP, {**DIRECT, "mesh.api.key": "new-key,old-key"})
    linked(rest, lam)
    assert [rest.get(f"/api/pojo/mesh/{n}").status_code for n in range(10)] == [200] * 10
    # the last step at a newcomer: the new key only; it links with the app that presents the new key
    newcomer = mesh.app(PEER_APP, {**DIRECT, "mesh.api.key": "new-key"})
    linked(newcomer, rest)
    assert call(newcomer, f"hello.world@{rest.origin}")["status"] == 200


async def framed_exchange(port: int, messages: list[bytes], *, header: bytes | None = None) -> list[bytes]:
    """Speak framed TCP to an app's direct listener as a stranger would: send `messages` (or a bare
    `header`), answer a challenge with a forged proof, and return the payloads of the frames it sent back
    until it closed (a close frame's payload starts with its kind, 3)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for message in messages:
            writer.write(len(message).to_bytes(4, "big") + message)
        if header is not None:
            writer.write(header)
        received: list[bytes] = []
        while True:
            try:
                length = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 10), "big")
            except asyncio.IncompleteReadError:
                return received
            payload = await reader.readexactly(length & 0x7FFF_FFFF)
            received.append(payload)
            if not length & 0x8000_0000 and msgpack.unpackb(payload).get("type") == "challenge":
                proof = msgpack.packb({"type": "proof", "sig": "A" * 88})
                writer.write(len(proof).to_bytes(4, "big") + proof)
    finally:
        writer.close()


def closed_with(frames: list[bytes]) -> tuple[int, str]:
    assert frames and frames[-1][:1] == b"\x03", frames
    return int.from_bytes(frames[-1][1:3], "big"), frames[-1][3:].decode()


async def test_a_stranger_on_the_framed_listener_is_refused_and_logged(mesh: Mesh) -> None:
    key = {"mesh.api.key": "the-mesh-key"}
    mesh.monitor(key)
    lam = mesh.app(LAMBDA_APP, {**DIRECT, **key})
    rest = mesh.app(REST_APP, {**DIRECT, **key})
    linked(rest, lam)
    port = int(nodes_of(rest)[lam.origin]["direct_address"].rpartition(":")[2])

    def opening(presented: str | None) -> bytes:
        return msgpack.packb({"type": "meshkit-direct", "key": presented})

    for presented in (None, "guess"):  # no mesh key, a wrong one: refused before any handshake
        assert closed_with(await framed_exchange(port, [opening(presented)])) == (
            4403,
            "missing or wrong mesh key",
        )
    lam.wait_for_log("Refused a direct connection from 127.0.0.1")
    assert "missing or wrong mesh key" in lam.log()
    for garbage in (b"\xc1 not msgpack", msgpack.packb([1, 2])):
        assert closed_with(await framed_exchange(port, [garbage])) == (
            4403,
            "not a meshkit direct connection",
        )
    # a frame announcing more than a link takes: closed as a websocket would (1009), nothing allocated
    assert closed_with(await framed_exchange(port, [], header=(1 << 30).to_bytes(4, "big")))[0] == 1009
    # the mesh key, REST's origin, but not REST's private key
    hello = msgpack.packb({"type": "hello", "origin": rest.origin, "to": lam.origin, "nonce": "ab" * 16})
    frames = await framed_exchange(port, [opening("the-mesh-key"), hello])
    refused = msgpack.unpackb(frames[-2])
    assert refused["type"] == "refused" and "not signed by the key vouched for" in refused["message"]
    assert closed_with(frames)[0] == 4403
    lam.wait_for_log(f"claiming {rest.origin}: the proof is not signed by the key vouched for")
    # the real link was untouched, and serves
    assert path_to(rest, lam) == "direct"
    assert rest.get("/api/pojo/mesh/7").json()["id"] == 7


def test_the_websocket_carrier_links_peers_that_advertise_it(mesh: Mesh) -> None:
    """`mesh.direct.address` as a ws:// URL: the link is the websocket on the app's HTTP port (one port in a
    pod), here on one side only: the other side's framed address is dialed or the websocket is."""
    mesh.monitor()
    port = free_port()
    on_http = mesh.app(PEER_APP, {**DIRECT, "mesh.direct.address": f"ws://127.0.0.1:{port}"}, port=port)
    framed = mesh.app(PEER_APP, DIRECT)
    linked(on_http, framed)
    assert nodes_of(framed)[on_http.origin]["direct_address"] == f"ws://127.0.0.1:{port}/api/mesh/direct"
    outcomes = [call(on_http, f"peer.echo@{framed.origin}", mark=n) for n in range(10)]
    outcomes += [call(framed, f"peer.echo@{on_http.origin}", mark=n) for n in range(10)]
    assert [o["status"] for o in outcomes] == [200] * 20, outcomes
    assert path_to(on_http, framed) == path_to(framed, on_http) == "direct"
