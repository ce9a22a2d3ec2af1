"""Cards: what an app tells its closed user group about itself, kept for it by the presence monitors.

An app's card is its join without the virtual topic (the monitors hand that out), with the digest of its
contracts, signed by the app. It goes to the app's monitor once the app listens; the monitors keep each
app's latest card, hand a newcomer the cards of its group right after `ready` and pass each new or changed
card to the group. No member answers a join, so a join storm of N apps writes about 2N records, not N^2
(docs/protocol/presence.md, "Cards"). The monitors cannot forge a card: a receiver checks it under the key
vouched for its origin.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack

from meshkit.mesh._frames import FrameError
from meshkit.security import Identity

CARD = "card"
DIGEST_CHARS = 64  # sha256, in hex


def contracts_digest(contracts: object) -> str:
    """The sha256 (hex) of the contracts map's MsgPack bytes, encoded as signatures are (signing.md)."""
    packed = msgpack.packb(contracts, use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()


def make_card(identity: Identity, me: dict[str, Any], contracts: dict[str, Any]) -> dict[str, Any]:
    """What the `card` message carries: the signed card, and the contracts map its digest names."""
    fields = {k: v for k, v in me.items() if k != "topic"}
    card = identity.sign_control({"type": CARD, **fields, "contracts": contracts_digest(contracts)})
    return {"card": card, "contracts": contracts}


class TakenCards:
    """Which card of each peer this app took (its signature and the topic beside it), so that the same card
    handed on again (a monitor's list after a move, a member seen twice) costs nothing."""

    def __init__(self) -> None:
        self._taken: dict[str, tuple[str, str]] = {}

    def seen(self, origin: str, card: dict[str, Any], topic: str) -> bool:
        return self._taken.get(origin) == (card.get("sig"), topic)

    def take(self, origin: str, card: dict[str, Any], topic: str) -> None:
        self._taken[origin] = (str(card.get("sig")), topic)

    def forget(self, origin: str) -> None:
        self._taken.pop(origin, None)


def card_as_join(card: object, origin: str, topic: object) -> dict[str, Any]:
    """A member notice's card as the join it stands for (its topic the monitors'); FrameError if it is not
    one for `origin`."""
    if not isinstance(card, dict) or card.get("type") != CARD or card.get("origin") != origin:
        raise FrameError(f"a card for {origin} that is not its card")
    if not isinstance(topic, str):
        raise FrameError(f"the card of {origin} came without a virtual topic")
    return {**card, "topic": topic}


class FrameContracts:
    """The contracts maps a `notices` frame carries, each checked against its digest and parsed once for
    all the cards of the frame that name it (instances of one app share theirs)."""

    def __init__(self, bodies: object, parse: Callable[[object], dict[str, dict[str, Any]]]) -> None:
        self._bodies = bodies if isinstance(bodies, dict) else {}
        self._parse = parse
        self._done: dict[str, dict[str, dict[str, Any]] | FrameError | None] = {}

    def named_by(self, card: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        """The parsed contracts the card's digest names; None when the frame has none that match it,
        FrameError when they are malformed."""
        digest = card.get("contracts")
        if not isinstance(digest, str):
            return None
        if digest not in self._done:
            body = self._bodies.get(digest)
            try:
                matches = body is not None and contracts_digest(body) == digest
                self._done[digest] = self._parse(body) if matches else None
            except FrameError as exc:
                self._done[digest] = exc
        done = self._done[digest]
        if isinstance(done, FrameError):
            raise done
        return done
