"""Mesh admission: the shared API keys an app presents to join the monitor and to call `/api/event`."""

from __future__ import annotations

import hmac

from meshkit._config import AppConfig

KEY_HEADER = "x-mesh-key"


class MeshKeys:
    """`mesh.api.key`: one key, or a comma list (the first is presented; any is accepted: rotate by adding
    the new key everywhere, then moving it first, then dropping the old one). No key: admission is open."""

    def __init__(self, config: AppConfig) -> None:
        self._keys = [k.encode() for k in config.get_list("mesh.api.key")]

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
