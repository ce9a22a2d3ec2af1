"""Who may join and who said what: the mesh admission keys (and HMAC) and each app's Ed25519 identity."""

from meshkit.security._identity import PUBLIC_KEY_CHARS, SIGNATURE, Identity, public_key, signed_by
from meshkit.security._keys import KEY_HEADER, MeshKeys

__all__ = ["KEY_HEADER", "PUBLIC_KEY_CHARS", "SIGNATURE", "Identity", "MeshKeys", "public_key", "signed_by"]
