"""The mesh over TLS with real processes on a real broker: a presence monitor over wss:// that requires client
certificates (mutual TLS), apps that join it with theirs and call each other, apps that cannot and say why,
and the direct path over framed TLS between two apps serving HTTPS that require certificates too.

One monitor and three apps are shared by the module (tests/support/pki.py makes the certificates):
``direct_a`` and ``direct_b`` serve HTTPS with client auth required and take the direct path; ``plain``
serves plain HTTP and takes the broker only; all three present the client certificate to the monitor.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshkit import AppError, PostOffice
from meshkit.devbroker import DevBroker
from meshkit.testing import running_platform
from tests.support.eventually import wait_until
from tests.support.kafka_broker import _require_tansu
from tests.support.mesh_fixtures import Mesh, Node, connections_of, nodes_of, path_to, routes_of
from tests.support.pki import Pki, make_pki

pytestmark = pytest.mark.kafka

PEER_APP = "tests.apps.mesh_peer:app"


@dataclass
class TlsMesh:
    mesh: Mesh
    pki: Pki
    monitor: Node
    direct_a: Node
    direct_b: Node
    plain: Node

    def client(self, **files: Path) -> dict[str, str]:
        """tls.* properties from `ca`, `certfile`, `keyfile`; quick to try the monitor again on failure."""
        return {f"tls.{key}": str(path) for key, path in files.items()} | {"presence.wait": "2"}


def mutual(pki: Pki) -> dict[str, str]:
    """Serve HTTPS and WSS with the server certificate, requiring a client certificate from `pki.ca`."""
    return {
        "server.ssl.certfile": str(pki.server_cert),
        "server.ssl.keyfile": str(pki.server_key),
        "server.ssl.client.auth": "required",
        "server.ssl.ca": str(pki.ca),
    }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    _require_tansu()
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    with DevBroker() as broker, Mesh(broker, ssl_context=pki.client_context()) as mesh:
        monitor = mesh.monitor(mutual(pki))
        assert monitor.presence_url.startswith("wss://")
        client = {
            "tls.ca": str(pki.ca),
            "tls.certfile": str(pki.client_cert),
            "tls.keyfile": str(pki.client_key),
        }
        direct = {**mutual(pki), **client, "mesh.transport": "direct"}
        with ThreadPoolExecutor(3) as pool:
            started = [pool.submit(mesh.app, PEER_APP, props) for props in (direct, direct, client)]
        direct_a, direct_b, plain = (future.result() for future in started)
        yield TlsMesh(mesh, pki, monitor, direct_a, direct_b, plain)
        # an idle kept-alive TLS connection never answers the server's close_notify: uvicorn would wait
        mesh.http.close()


def call(app: Node, target: str, mark: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = app.get_json(f"/call/{target}?mark={mark}")
    return result


def test_apps_with_a_client_certificate_join_the_monitor_over_wss_and_call_each_other(tls: TlsMesh) -> None:
    apps = (tls.direct_a, tls.direct_b, tls.plain)
    for app in apps:
        app.wait_for_log(f"Connected {tls.monitor.presence_url}/{app.origin}")
    assert set(connections_of(tls.monitor)) >= {app.origin for app in apps}
    # each app learns of the others from their cards, each on its own way: wait for every one of them
    for app in apps:
        wait_until(lambda app=app: len(routes_of(app).get("peer.echo", {})) == 3, timeout=10)
    # the plain app takes the broker only: these cross Tansu
    there = [call(tls.plain, f"peer.echo@{tls.direct_a.origin}", n) for n in range(5)]
    back = [call(tls.direct_a, f"peer.echo@{tls.plain.origin}", n) for n in range(5)]
    assert [o["status"] for o in there + back] == [200] * 10, there + back
    assert {o["body"]["origin"] for o in there} == {tls.direct_a.origin}
    assert path_to(tls.plain, tls.direct_a) == path_to(tls.direct_a, tls.plain) == "broker"


def test_apps_the_monitor_or_they_cannot_trust_are_refused_and_log_why(tls: TlsMesh) -> None:
    pki, url = tls.pki, tls.monitor.presence_url
    cases = [  # what the app presents and trusts, and why it is refused
        (
            tls.client(ca=pki.ca),
            "the server closed the connection before answering: it may require a client "
            "certificate (tls.certfile is not set)",
        ),
        (
            tls.client(ca=pki.other_ca, certfile=pki.client_cert, keyfile=pki.client_key),
            "certificate verify failed: self-signed certificate in certificate chain "
            f"(trusting tls.ca={pki.other_ca})",
        ),
        (
            tls.client(ca=pki.ca, certfile=pki.stranger_cert, keyfile=pki.stranger_key),
            f"the server closed the connection before answering: it may not trust this app's certificate "
            f"tls.certfile={pki.stranger_cert}",
        ),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        apps = list(pool.map(lambda case: tls.mesh.app(PEER_APP, case[0]), cases))
    try:
        for app, (_, reason) in zip(apps, cases, strict=True):
            line = app.wait_for_log(f"Presence monitor {url}: TLS handshake failed: ")
            assert line.endswith(
                f" WARNING meshkit.mesh.presence - Presence monitor {url}: TLS handshake failed: {reason}"
            ), line
            # and it goes on trying, quietly: one warning, then the same at info level
            again = app.wait_for_log(f" INFO meshkit.mesh.presence - Presence monitor {url}: TLS handshake")
            assert again.partition(" - ")[2] == line.partition(" - ")[2]
            assert app.running and "Traceback" not in app.log()
        assert not set(connections_of(tls.monitor)) & {app.origin for app in apps}
        everyone = {tls.direct_a.origin, tls.direct_b.origin, tls.plain.origin}
        assert set(routes_of(tls.plain).get("peer.echo", {})) == everyone
    finally:
        with ThreadPoolExecutor(len(apps)) as pool:
            list(pool.map(lambda app: app.process.stop(), apps))


def test_the_direct_path_runs_over_framed_tls_with_mutual_tls(tls: TlsMesh) -> None:
    a, b = tls.direct_a, tls.direct_b
    wait_until(
        lambda: path_to(a, b) == "direct" and path_to(b, a) == "direct",
        timeout=15,
        what="a direct link between the two apps serving TLS",
        describe=lambda: f"{nodes_of(a)}\n{a.log()[-1500:]}\n{b.log()[-1500:]}",
    )
    assert re.fullmatch(r"tls://127\.0\.0\.1:\d+", nodes_of(a)[b.origin]["direct_address"])
    assert re.fullmatch(r"tls://127\.0\.0\.1:\d+", nodes_of(b)[a.origin]["direct_address"])
    outcomes = [call(a, f"peer.echo@{b.origin}", n) for n in range(10)]
    outcomes += [call(b, f"peer.echo@{a.origin}", n) for n in range(10)]
    assert [o["status"] for o in outcomes] == [200] * 20, outcomes
    assert path_to(a, b) == "direct"
    assert "TLS handshake failed" not in a.log() + b.log()


async def test_event_over_http_to_an_app_requiring_client_certificates(tls: TlsMesh) -> None:
    pki, url = tls.pki, f"{tls.direct_a.url}/api/event"
    assert url.startswith("https://")
    files = {"tls.ca": str(pki.ca), "tls.certfile": str(pki.client_cert), "tls.keyfile": str(pki.client_key)}
    async with running_platform([], properties=files) as platform:
        reply = await PostOffice(platform).request("peer.echo", "x", endpoint=url, timeout=5)
        assert reply.status == 200 and reply.body["origin"] == tls.direct_a.origin
    async with running_platform([], properties={"tls.ca": str(pki.ca)}) as platform:
        with pytest.raises(AppError) as refused:
            await PostOffice(platform).request("peer.echo", "x", endpoint=url, timeout=5)
        assert refused.value.status == 503
        assert "may require a client certificate (tls.certfile is not set)" in refused.value.message
