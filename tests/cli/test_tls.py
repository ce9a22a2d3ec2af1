"""The operator CLI against an app serving HTTPS with a private CA: `--cacert` (or TLS_CA) to trust it,
`--cert`/`--cert-key` for an app that asks for a client certificate, and a clear refusal without them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Meshkit
from tests.support.pki import Pki, make_pki
from tests.support.servers import UvicornProcess


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mutual(pki: Pki) -> Iterator[UvicornProcess]:
    """An app serving HTTPS that requires a client certificate its CA signed."""
    properties = {
        "cloud.connector": "none",
        "server.ssl.certfile": str(pki.server_cert),
        "server.ssl.keyfile": str(pki.server_key),
        "server.ssl.client.auth": "required",
        "server.ssl.ca": str(pki.ca),
    }
    with UvicornProcess(
        "tests.apps.http_target:app", properties=properties, ssl_context=pki.client_context()
    ) as p:
        yield p


def test_call_and_routes_over_mutual_tls_with_the_ca_and_a_client_certificate(
    meshkit: Meshkit, mutual: UvicornProcess, pki: Pki
) -> None:
    assert mutual.url.startswith("https://")
    tls = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--cert-key", str(pki.client_key)]
    done = meshkit("call", "test.echo", "--body", '{"over": "tls"}', "--endpoint", mutual.url, *tls)
    assert done.returncode == 0, done.stderr
    assert '"over": "tls"' in done.stdout
    env = {"TLS_CA": str(pki.ca), "TLS_CERTFILE": str(pki.client_cert), "TLS_KEYFILE": str(pki.client_key)}
    routes = meshkit("routes", mutual.url, env=env)
    assert routes.returncode == 0, routes.stderr
    assert "test.echo" in routes.stdout


def test_without_the_ca_or_the_client_certificate_the_cli_says_it_cannot_reach_the_app(
    meshkit: Meshkit, mutual: UvicornProcess, pki: Pki, tmp_path: Path
) -> None:
    untrusted = meshkit("call", "test.echo", "--endpoint", mutual.url)
    assert untrusted.returncode == 3, untrusted.stderr
    assert "certificate verify failed" in untrusted.stderr
    anonymous = meshkit("routes", mutual.url, "--cacert", str(pki.ca))
    assert anonymous.returncode == 3, anonymous.stderr
    assert f"cannot reach {mutual.url}" in anonymous.stderr
    missing = meshkit("call", "test.echo", "--endpoint", mutual.url, "--cacert", str(tmp_path / "none.pem"))
    assert missing.returncode == 2 and "tls.ca" in missing.stderr and "none.pem" in missing.stderr
