"""TLS: what `server.ssl.*` and `tls.*` mean, and Event over HTTP over https:// against a real server.

The certificates are made here (tests/support/pki.py): a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate, and an unrelated CA. The mesh over wss:// (monitor with mutual TLS, the
direct path) is in tests/mesh/test_mesh_tls.py.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit import AppConfig, AppError, PostOffice
from meshkit.config import ConfigError
from meshkit.mesh import DirectLinks, direct_address
from meshkit.mesh._admission import Admission
from meshkit.mesh._vouched import VouchedKeys
from meshkit.security import ClientTLS, Identity, MeshKeys, server_tls
from meshkit.testing import running_platform
from tests.support.pki import Pki, make_pki
from tests.support.servers import REPO, UvicornProcess, free_port

TARGET = "tests.apps.http_target:app"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(**values: str) -> AppConfig:
    return AppConfig.load(argv=[], environ={}, overrides={k.replace("_", "."): v for k, v in values.items()})


def serving(pki: Pki) -> dict[str, str]:
    return {"server.ssl.certfile": str(pki.server_cert), "server.ssl.keyfile": str(pki.server_key)}


# -- configuration -------------------------------------------------------------------------------------------
def test_a_missing_or_unreadable_file_is_a_config_error_naming_its_key_and_path(
    pki: Pki, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nowhere.pem")
    with pytest.raises(ConfigError, match=rf"^tls\.ca: cannot read {missing}: No such file"):
        ClientTLS(config(tls_ca=missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match=rf"^tls\.ca: cannot load {garbage} as a CA bundle"):
        ClientTLS(config(tls_ca=str(garbage)))
    with pytest.raises(ConfigError, match=rf"^tls\.certfile/tls\.keyfile: cannot load {garbage} with "):
        ClientTLS(config(tls_certfile=str(garbage), tls_keyfile=str(pki.client_key)))
    with pytest.raises(ConfigError, match=r"^tls\.keyfile is set without tls\.certfile"):
        ClientTLS(config(tls_keyfile=str(pki.client_key)))
    with pytest.raises(ConfigError, match=rf"^server\.ssl\.certfile: cannot read {missing}"):
        server_tls(config(server_ssl_certfile=missing))
    with pytest.raises(ConfigError, match=rf"^server\.ssl\.keyfile: cannot read {missing}"):
        server_tls(config(server_ssl_certfile=str(pki.server_cert), server_ssl_keyfile=missing))
    with pytest.raises(ConfigError, match=r"^server\.ssl\.certfile/server\.ssl\.keyfile: cannot load"):
        server_tls(config(server_ssl_certfile=str(pki.server_cert), server_ssl_keyfile=str(pki.client_key)))


def test_server_settings_become_uvicorns_and_mutual_tls_needs_a_ca(pki: Pki) -> None:
    assert server_tls(config()) == {}
    plain = {"server.ssl.certfile": str(pki.server_cert), "server.ssl.keyfile": str(pki.server_key)}
    settings = server_tls(AppConfig.load(argv=[], environ={}, overrides=plain))
    assert settings["ssl_certfile"] == str(pki.server_cert) and settings["ssl_cert_reqs"] == ssl.CERT_NONE
    mutual = {**plain, "server.ssl.client.auth": "required", "server.ssl.ca": str(pki.ca)}
    settings = server_tls(AppConfig.load(argv=[], environ={}, overrides=mutual))
    assert settings["ssl_cert_reqs"] == ssl.CERT_REQUIRED and settings["ssl_ca_certs"] == str(pki.ca)
    with pytest.raises(ConfigError, match=r"server\.ssl\.client\.auth=required needs server\.ssl\.ca"):
        server_tls(
            AppConfig.load(argv=[], environ={}, overrides={**plain, "server.ssl.client.auth": "required"})
        )
    with pytest.raises(ConfigError, match=r"must be none, optional or required, not 'want'"):
        server_tls(AppConfig.load(argv=[], environ={}, overrides={**plain, "server.ssl.client.auth": "want"}))
    with pytest.raises(ConfigError, match=r"need server\.ssl\.certfile"):
        server_tls(config(server_ssl_keyfile=str(pki.server_key)))


def test_the_environment_names_the_files_too(pki: Pki) -> None:
    tls = ClientTLS(AppConfig.load(argv=[], environ={"TLS_CA": str(pki.ca)}))
    assert tls.ca == str(pki.ca) and tls.configured
    assert tls.for_url("wss://127.0.0.1:1/ws/presence") is tls.context
    assert tls.for_url("ws://127.0.0.1:1/ws/presence") is None and tls.for_url("http://x/api/event") is None


def test_an_app_serving_tls_advertises_a_tls_direct_address() -> None:
    base = {"mesh.transport": "direct", "server.host": "127.0.0.1", "server.port": "8443"}
    plain = AppConfig.load(argv=[], environ={}, overrides={**base, "mesh.direct.port": "9443"})
    assert direct_address(plain) == "tcp://127.0.0.1:9443"
    secure = plain.with_overrides({"server.ssl.certfile": "/etc/meshkit/tls.crt"})
    assert direct_address(secure) == "tls://127.0.0.1:9443"
    assert direct_address(secure.with_overrides({"mesh.direct.address": "10.0.0.7:9000"})) == (
        "tls://10.0.0.7:9000"
    )
    websocket = secure.with_overrides({"mesh.direct.address": "https://10.0.0.7:8443"})
    assert direct_address(websocket) == "wss://10.0.0.7:8443/api/mesh/direct"


def test_meshkit_run_refuses_to_start_without_its_certificate(tmp_path: Path) -> None:
    missing = tmp_path / "tls.crt"
    run = [sys.executable, "-m", "meshkit.cli", "run", TARGET, "--port", str(free_port())]
    result = subprocess.run(
        [*run, f"-Dserver.ssl.certfile={missing}"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert f"meshkit: error: server.ssl.certfile: cannot read {missing}: No such file" in result.stderr


# -- Event over HTTP over https:// ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def https_server(pki: Pki) -> Iterator[UvicornProcess]:
    with UvicornProcess(TARGET, properties=serving(pki)) as process:
        yield process


async def test_event_over_https_reaches_a_server_the_configured_ca_signed(
    https_server: UvicornProcess, pki: Pki
) -> None:
    assert https_server.event_url.startswith("https://127.0.0.1:")
    async with running_platform([], properties={"tls.ca": str(pki.ca)}) as platform:
        po = PostOffice(platform)
        reply = await po.request("test.echo", {"over": "tls"}, endpoint=https_server.event_url, timeout=5)
        assert reply.status == 200 and reply.body == {"over": "tls"}
        words = [s.body async for s in po.stream("test.echo", "one", endpoint=https_server.event_url)]
        assert words == ["one"]


async def test_event_over_https_refuses_a_server_its_ca_did_not_sign(
    https_server: UvicornProcess, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    url = https_server.event_url
    for properties, trusting in (
        ({"tls.ca": str(pki.other_ca)}, f"tls.ca={pki.other_ca}"),
        ({}, "the system CAs"),
    ):
        caplog.clear()
        async with running_platform([], properties=properties) as platform:
            for _ in range(2):
                with pytest.raises(AppError) as refused:
                    await PostOffice(platform).request("test.echo", 1, endpoint=url, timeout=5)
                assert refused.value.status == 503
                assert (
                    f"Unable to reach {url}: TLS handshake failed: certificate verify failed: "
                    f"unable to get local issuer certificate (trusting {trusting})"
                ) == refused.value.message
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [f"Event over HTTP to {url}: {refused.value.message.partition(': ')[2]}"]
    assert "TLS handshake failed" not in https_server.log_text()  # the server saw no request at all


async def test_a_direct_dial_to_a_peer_its_ca_did_not_sign_fails_over_to_the_broker_and_says_why(
    https_server: UvicornProcess, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    peer, address = "20261202" + "b" * 32, f"wss://127.0.0.1:{https_server.port}/api/mesh/direct"
    refusals = (
        (
            pki.other_ca,
            "TLS handshake failed: certificate verify failed: unable to get local issuer certificate "
            f"(trusting tls.ca={pki.other_ca})",
        ),
        (pki.ca, "server rejected WebSocket connection: HTTP 403"),  # TLS passes: that app takes no links
    )
    framed = f"tls://127.0.0.1:{https_server.port}"  # the same certificate, on framed TCP
    not_signed = refusals[0]
    for ca, failure, address in [*((ca, f, address) for ca, f in refusals), (*not_signed, framed)]:
        links = DirectLinks(
            Admission("20261202" + "a" * 32, Identity(), VouchedKeys()),
            MeshKeys(config()),
            address="wss://127.0.0.1:1/api/mesh/direct",
            deliver=lambda record, via: None,
            on_lost=lambda origin, cids, why: None,
            inbox="inbox",
            reply_topic=lambda: None,
            max_event_bytes=1 << 20,
            tls=ClientTLS(config(tls_ca=str(ca))),
        )
        caplog.clear()
        assert await links._open(peer, address) is None
        assert links.failures[peer] == failure
        line = f"No direct connection to {peer} at {address} ({links.failures[peer]}): using the broker"
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [line]


def test_kafka_keeps_its_own_tls_and_sasl_settings_and_never_gets_these() -> None:
    from meshkit.connectors.kafka import kafka_settings, producer_config

    values = {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/etc/ssl/kafka-ca.pem",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "meshkit",
        "tls.ca": "/etc/meshkit/ca.pem",
        "tls.certfile": "/etc/meshkit/tls.crt",
        "server.ssl.certfile": "/etc/meshkit/tls.crt",
        "server.ssl.client.auth": "required",
    }
    client = producer_config(kafka_settings(AppConfig.load(argv=[], environ={}, overrides=values)))
    assert client["security.protocol"] == "SASL_SSL" and client["ssl.ca.location"] == "/etc/ssl/kafka-ca.pem"
    assert client["sasl.mechanism"] == "SCRAM-SHA-512" and client["sasl.username"] == "meshkit"
    assert not [key for key in client if key.startswith(("tls.", "server."))]  # librdkafka would refuse them
