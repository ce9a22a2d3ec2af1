"""The peers a presence monitor vouched for, with their public keys, and what they said before that.

Vouching and the bounds on held messages: docs/protocol/signing.md.

A peer's join can reach us over the broker before our monitor tells us its key (the two travel separate
ways), so unvouched messages wait here a little, bounded, instead of being lost or believed.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshkit.security import ReplayGuard

log = logging.getLogger("meshkit.mesh")

ORIGIN = re.compile(r"[0-9]{8}[0-9a-f]{32}")  # used with fullmatch: ASCII digits only, no trailing newline
HOLD_SECONDS = 10.0
MAX_HELD = 128  # messages, all origins together
MAX_HELD_BYTES = 64 * 1024  # one message; larger ones are not kept waiting


class VouchedKeys:
    def __init__(self, hold_seconds: float = HOLD_SECONDS) -> None:
        self.hold_seconds = hold_seconds
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._held: list[tuple[float, str, dict[str, Any]]] = []
        self.replays = ReplayGuard()
        self._latest: dict[tuple[str, str], int] = {}  # (origin, "state" | "contracts") -> seq taken

    def key(self, origin: str) -> Ed25519PublicKey | None:
        return self._keys.get(origin)

    def origins(self) -> set[str]:
        return set(self._keys)

    def vouch(self, origin: str, key: Ed25519PublicKey) -> list[dict[str, Any]]:
        """Take the monitor's word for `origin`; returns what it said while we did not know it."""
        self._keys[origin] = key
        return self._release({origin})

    def replace(self, keys: dict[str, Ed25519PublicKey]) -> list[dict[str, Any]]:
        """A monitor's whole list, on connecting to it: it replaces ours; returns messages now vouched for."""
        self._keys = dict(keys)
        return self._release(set(keys))

    def fresh(self, origin: str, message: dict[str, Any]) -> str | None:
        """None when `message` (its signature checked) is neither a replay nor older than what we took
        of its origin's routes (join, peer, routes, card) or contracts; else why it is refused."""
        refused = self.replays.check(origin, message)
        return refused if refused is not None else self._newest(origin, message)

    def current(self, origin: str, card: dict[str, Any]) -> str | None:
        """None when a card a monitor kept (its signature checked) is no older than the state we took of
        its origin; else why it is refused. No time window: it was made when its app joined, maybe long
        ago; and no seen check: the same card comes again after its app moves (presence.md#cards)."""
        return ReplayGuard.unstamped(card) or self._newest(origin, card)

    def _newest(self, origin: str, message: dict[str, Any]) -> str | None:
        kind, seq = message.get("type"), int(message["seq"])
        line = (origin, "contracts" if kind == "contracts" else "state")
        taken = self._latest.get(line)
        if taken is not None and seq < taken:  # a newcomer never saw it, but the state it took is newer
            return f"its seq {seq} is older than the {line[1]} taken from it (seq {taken})"
        if kind != "routes" or taken is not None:  # a change to routes we never had is no baseline
            self._latest[line] = seq
        return None

    def forget(self, origin: str) -> None:
        self._keys.pop(origin, None)
        self.replays.forget(origin)
        self._latest.pop((origin, "state"), None)
        self._latest.pop((origin, "contracts"), None)
        self._held = [entry for entry in self._held if entry[1] != origin]

    def hold(self, origin: str, message: dict[str, Any]) -> bool:
        """Keep a message from an origin not vouched for yet; False when it cannot be kept."""
        self._expire()
        if len(self._held) >= MAX_HELD or len(msgpack.packb(message, use_bin_type=True)) > MAX_HELD_BYTES:
            return False
        self._held.append((time.monotonic(), origin, message))
        return True

    def _release(self, origins: set[str]) -> list[dict[str, Any]]:
        released = [message for _, origin, message in self._held if origin in origins]
        if released:
            self._held = [entry for entry in self._held if entry[1] not in origins]
        return released

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.hold_seconds
        expired = [origin for held_at, origin, _ in self._held if held_at < cutoff]
        if expired:
            self._held = self._held[len(expired) :]  # held in arrival order: the expired ones lead
            for origin in sorted(set(expired)):
                log.warning(
                    "Dropped %d control message%s from %s: no presence monitor vouched for it within %g s",
                    expired.count(origin),
                    "" if expired.count(origin) == 1 else "s",
                    origin,
                    self.hold_seconds,
                )
