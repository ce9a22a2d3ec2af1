"""Who may join and who said what: the mesh admission keys (and HMAC), each app's Ed25519 identity, TLS."""

from meshkit.security._identity import PUBLIC_KEY_CHARS, SIGNATURE, Identity, public_key, signed_by
from meshkit.security._keys import CALLER_HEADER, KEY_HEADER, MeshKeys
from meshkit.security._replay import ReplayGuard, Stamp
from meshkit.security._tls import ClientTLS, server_context, server_tls, serves_tls, tls_failure

__all__ = [
    "CALLER_HEADER",
    "KEY_HEADER",
    "PUBLIC_KEY_CHARS",
    "SIGNATURE",
    "ClientTLS",
    "Identity",
    "MeshKeys",
    "ReplayGuard",
    "Stamp",
    "public_key",
    "server_context",
    "server_tls",
    "serves_tls",
    "signed_by",
    "tls_failure",
]
