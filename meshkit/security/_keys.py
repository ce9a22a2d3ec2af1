"""Mesh admission: the shared API keys an app presents to join the monitor and to call `/api/event`, and the
HMAC that signs the monitors' log (docs/protocol/signing.md)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgpack

from meshkit.config import AppConfig

KEY_HEADER = "x-mesh-key"
CALLER_HEADER = "x-mesh-caller"  # who is calling, signed (docs/protocol/access.md#over-http)


class MeshKeys:
    """`mesh.api.key`: one key, or a comma list (the first is presented; any is accepted: rotate by adding
    the new key everywhere, then moving it first, then dropping the old one). No key: admission is open."""

    def __init__(self, config: AppConfig, setting: str = "mesh.api.key") -> None:
        self._keys = [k.encode() for k in config.get_list(setting)]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    @property
    def own(self) -> str | None:
        return self._keys[0].decode() if self._keys else None

    def accepts(self, presented: str | None) -> bool:
        """Constant-time comparison against every configured key; True when none is configured."""
        if not self._keys:
            return True
        if presented is None:
            return False
        candidate = presented.encode()
        matches = [hmac.compare_digest(candidate, key) for key in self._keys]  # no early exit
        return any(matches)

    def headers(self) -> dict[str, str]:
        return {KEY_HEADER: self._keys[0].decode()} if self._keys else {}

    # -- the monitors' log on the broker: signed, so only holders of these keys can write it --------------
    def sign(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message with `sig`, an HMAC-SHA256 of its MsgPack form under the presented key."""
        if not self._keys:
            return message
        unsigned = {k: v for k, v in message.items() if k != "sig"}
        return {**unsigned, "sig": _mac(self._keys[0], unsigned)}

    def verify(self, message: dict[str, Any]) -> bool:
        """True when no key is configured, or `sig` matches one of the keys (constant time)."""
        if not self._keys:
            return True
        sig = message.get("sig")
        if not isinstance(sig, str):
            return False
        unsigned = {k: v for k, v in message.items() if k != "sig"}
        matches = [hmac.compare_digest(sig, _mac(key, unsigned)) for key in self._keys]
        return any(matches)


def _mac(key: bytes, message: dict[str, Any]) -> str:
    return hmac.new(key, msgpack.packb(message, use_bin_type=True), hashlib.sha256).hexdigest()
