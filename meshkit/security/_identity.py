"""Who said it: each process signs its control messages with its own Ed25519 key (docs/protocol/signing.md).

The shared mesh key only says "a member wrote this"; any member could still claim to be another. So each app
makes a key pair at start, shows the public half to its presence monitor (over the admitted websocket), and
the monitors vouch for origin -> public key to the app's group. A peer takes a join, route change or answer
only when it is signed by the key vouched for that origin.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import msgpack

from meshkit.security._replay import Stamp

# cryptography is loaded where a key is first made or read: an app outside the mesh never needs it (~7 MB)
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE = "sig"
PUBLIC_KEY_CHARS = 44  # base64 of 32 bytes


class Identity:
    """This process's signing key; the private half never leaves it."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._private = Ed25519PrivateKey.generate()
        self.public_key = base64.b64encode(self._private.public_key().public_bytes_raw()).decode()
        self._stamp = Stamp()

    def sign(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message with `sig`, an Ed25519 signature of its MsgPack form."""
        unsigned = {k: v for k, v in message.items() if k != SIGNATURE}
        signature = self._private.sign(_signed_bytes(unsigned))
        return {**unsigned, SIGNATURE: base64.b64encode(signature).decode()}

    def sign_control(self, message: dict[str, Any]) -> dict[str, Any]:
        """A control message for the broker: stamped with `ts` and this process's next `seq`, then signed,
        so that a copy written again later is refused (docs/protocol/signing.md#replay)."""
        return self.sign(self._stamp(message))


def public_key(text: object) -> Ed25519PublicKey:
    """The key a base64 text stands for; ValueError when it is not one."""
    if not isinstance(text, str) or len(text) != PUBLIC_KEY_CHARS:
        raise ValueError("a public key is 44 characters of base64")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not an Ed25519 public key: {exc}") from None


def signed_by(key: Ed25519PublicKey, message: dict[str, Any]) -> bool:
    """True when `sig` is the signature of the rest of the message under `key`."""
    signature = message.get(SIGNATURE)
    if not isinstance(signature, str) or len(signature) > 100:
        return False
    from cryptography.exceptions import InvalidSignature  # loaded already: `key` is one

    try:
        unsigned = {k: v for k, v in message.items() if k != SIGNATURE}
        key.verify(base64.b64decode(signature, validate=True), _signed_bytes(unsigned))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


def _signed_bytes(message: dict[str, Any]) -> bytes:
    packed = msgpack.packb(message, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed
