"""A group's cards as the monitors hand them on (docs/protocol/presence.md#cards): each believed under the key
vouched for its origin, as its join would be, and taken into the routing table once."""

from __future__ import annotations

import logging
from typing import Any

from meshkit.mesh._cards import FrameContracts, TakenCards, card_as_join
from meshkit.mesh._direct import DirectLinks
from meshkit.mesh._frames import FrameError
from meshkit.mesh._peers import peer_of
from meshkit.mesh._table import RoutingTable
from meshkit.mesh._topics import TopicLayout
from meshkit.mesh._vouched import VouchedKeys
from meshkit.security import signed_by

log = logging.getLogger("meshkit.mesh")


class CardIntake:
    def __init__(
        self, me: str, vouched: VouchedKeys, table: RoutingTable, layout: TopicLayout, direct: DirectLinks
    ) -> None:
        self.me, self.vouched, self.table, self.layout, self.direct = me, vouched, table, layout, direct
        self.taken = TakenCards()

    def take(self, origin: str, key: Any, notice: dict[str, Any], bodies: FrameContracts | None) -> None:
        """A peer's card from a `member` notice; refused, with a log line, when it does not hold."""
        card, topic = notice.get("card"), notice.get("topic")
        if origin == self.me or (
            isinstance(card, dict) and isinstance(topic, str) and self.taken.seen(origin, card, topic)
        ):
            return
        try:
            join = card_as_join(card, origin, topic)  # `card` is a dict from here on
            if not signed_by(key, notice["card"]):
                raise FrameError("not signed by that app's key")
            stale = self.vouched.current(origin, notice["card"])
            known = self.table.peers.get(origin)
            if stale is not None and known is not None:  # its routes came since: only where it is is news
                known.topic = peer_of(self.layout, join).topic
                self.taken.take(origin, notice["card"], join["topic"])
                return
            if stale is not None:
                raise FrameError(stale)
            self.table.join(peer_of(self.layout, join))
            self.direct.learn(origin, join.get("direct"))
            self.taken.take(origin, notice["card"], join["topic"])
            contracts = bodies.named_by(join) if bodies is not None else None
            if contracts is not None:
                self.table.publish_contracts(origin, contracts)
        except FrameError as exc:
            log.warning("Refused the card of %s from the presence monitor: %s", origin, exc)

    def forget(self, origin: str) -> None:
        self.taken.forget(origin)
