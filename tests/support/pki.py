"""Certificates for TLS tests, made with `cryptography` and written to a directory:

    pki = make_pki(tmp_path)
    pki.ca, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key, pki.other_ca

`ca` signs a server certificate for 127.0.0.1 (an IP SAN) and localhost, and a client certificate; `other_ca`
is an unrelated CA (trusting it, a client refuses the server), which signs `stranger_cert`/`stranger_key`, a
client certificate the servers do not trust. EC P-256 keys: quick to make. `client_context()` is an SSL
context trusting `ca` and presenting the client certificate, for a test's own HTTP client.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    stranger_cert: Path
    stranger_key: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        usages = {"key_cert_sign": True, "crl_sign": True, "digital_signature": True}
    else:
        usages = {"key_cert_sign": False, "crl_sign": False, "digital_signature": True}
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usages,
        ),
        critical=True,
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "s", "c", "o", "x")}
    ca = _certificate("meshkit test CA", keys["ca"], None, ca=True)
    other = _certificate("unrelated CA", keys["o"], None, ca=True)
    server = _certificate(
        "127.0.0.1",
        keys["s"],
        (ca.subject, keys["ca"]),
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_auth = ExtendedKeyUsageOID.CLIENT_AUTH
    client = _certificate("meshkit app", keys["c"], (ca.subject, keys["ca"]), usage=client_auth)
    stranger = _certificate("stranger", keys["x"], (other.subject, keys["o"]), usage=client_auth)
    return Pki(
        ca=_write(directory, "ca", ca, keys["ca"]),
        server_cert=_write(directory, "server", server, keys["s"]),
        server_key=directory / "server.key",
        client_cert=_write(directory, "client", client, keys["c"]),
        client_key=directory / "client.key",
        other_ca=_write(directory, "other-ca", other, keys["o"]),
        stranger_cert=_write(directory, "stranger", stranger, keys["x"]),
        stranger_key=directory / "stranger.key",
    )
