"""Who may hold a direct connection: the mesh key at the door, then proof of a vouched identity each way
(docs/protocol/direct.md).

The caller says who it is and whom it wants, with a fresh nonce; the callee answers with its own nonce and
its signature over both origins and both nonces; the caller signs the same statement the other way round.
Each side checks the other's signature with the key its presence monitor vouched for that origin, so
neither a member of the mesh claiming another's origin nor a replayed handshake is admitted.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack

from meshkit.mesh._vouched import ORIGIN, VouchedKeys
from meshkit.security import Identity, signed_by

MAX_HANDSHAKE_BYTES = 4096


# a refusal that passes on its own: the monitors' word of the caller (or callee) has not reached the other yet
NOT_YET = "is not vouched for by a presence monitor (yet)"


class Refused(Exception):
    """The other side is not admitted (or did not admit us); the message says why."""


def nonce() -> str:
    return os.urandom(16).hex()


def pack(message: dict[str, Any]) -> bytes:
    packed = msgpack.packb(message, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def unpack(message: bytes, expected: str) -> dict[str, Any]:
    """A handshake message of type `expected`; Refused for anything else (a refusal says its reason)."""
    if not isinstance(message, bytes) or len(message) > MAX_HANDSHAKE_BYTES:
        raise Refused("a handshake message that is not a short binary message")
    try:
        data = msgpack.unpackb(message, raw=False)
    except Exception as exc:  # msgpack raises several types for garbage
        raise Refused(f"an undecodable handshake message ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise Refused("a handshake message that is not a map")
    kind = data.get("type")
    if kind == "refused":
        raise Refused(f"refused by the peer: {str(data.get('message'))[:200]}")
    if kind != expected:
        raise Refused(f"expected a {expected}, got {str(kind)[:40]!r}")
    return data


def _statement(signer: str, other: str, caller_nonce: str, callee_nonce: str) -> dict[str, Any]:
    return {"type": "direct", "from": signer, "to": other, "nonces": [caller_nonce, callee_nonce]}


def _text(data: dict[str, Any], key: str, limit: int = 200) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise Refused(f"a handshake without a valid {key}")
    return value


class Admission:
    """Both halves of the handshake, for one app: its identity and the keys vouched to it."""

    def __init__(self, origin: str, identity: Identity, vouched: VouchedKeys) -> None:
        self.origin = origin
        self.identity = identity
        self.vouched = vouched

    def _sign(self, other: str, caller_nonce: str, callee_nonce: str) -> str:
        signed = self.identity.sign(_statement(self.origin, other, caller_nonce, callee_nonce))
        return str(signed["sig"])

    def _check(self, signer: str, signature: object, caller_nonce: str, callee_nonce: str) -> None:
        key = self.vouched.key(signer)
        if key is None:
            raise Refused(f"{signer} {NOT_YET}")
        statement = _statement(signer, self.origin, caller_nonce, callee_nonce)
        if not signed_by(key, {**statement, "sig": signature}):
            raise Refused(f"the proof is not signed by the key vouched for {signer}")

    # -- the caller's side ---------------------------------------------------------------------------------
    def hello(self, callee: str) -> tuple[bytes, str]:
        mine = nonce()
        return pack({"type": "hello", "origin": self.origin, "to": callee, "nonce": mine}), mine

    def proof(self, callee: str, mine: str, challenge: bytes) -> bytes:
        """Check the callee's challenge (it is `callee`, and proves it); our proof in answer."""
        data = unpack(challenge, "challenge")
        if data.get("origin") != callee:
            raise Refused(f"the address answered for {str(data.get('origin'))[:40]}, not {callee}")
        theirs = _text(data, "nonce", 64)
        self._check(callee, data.get("sig"), mine, theirs)
        return pack({"type": "proof", "sig": self._sign(callee, mine, theirs)})

    # -- the callee's side ---------------------------------------------------------------------------------
    def challenge(self, hello: bytes) -> tuple[str, str, str, bytes]:
        """(the caller's claimed origin, its nonce, ours, the challenge to send); Refused for a bad hello."""
        data = unpack(hello, "hello")
        caller = _text(data, "origin", 40)
        if not ORIGIN.fullmatch(caller):
            raise Refused("a hello without a valid origin")
        if data.get("to") != self.origin:
            raise Refused(f"{caller} wanted {str(data.get('to'))[:40]}, not this app")
        theirs = _text(data, "nonce", 64)
        if self.vouched.key(caller) is None:
            raise Refused(f"{caller} {NOT_YET}")
        mine = nonce()
        message = {"type": "challenge", "origin": self.origin, "nonce": mine}
        return caller, theirs, mine, pack({**message, "sig": self._sign(caller, theirs, mine)})

    def admit(self, caller: str, theirs: str, mine: str, proof: bytes) -> None:
        """Refused unless `proof` is the caller's signature of this handshake."""
        self._check(caller, unpack(proof, "proof").get("sig"), theirs, mine)


def refusal(reason: str) -> bytes:
    return pack({"type": "refused", "message": reason})


READY = pack({"type": "ready"})
