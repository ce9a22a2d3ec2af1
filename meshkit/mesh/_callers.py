"""Who is calling: the signed word a caller gives with a request to a route that takes only some apps, and
its check where the request arrives (docs/protocol/access.md).

Over a direct link the caller is the peer the link admitted (its handshake proved the vouched key). Over the
broker a request to such a route carries `proof`: the caller's origin and stamp, signed with its Ed25519 key
over the request's id, address, recipient and a digest of its body. Over HTTP, the `x-mesh-caller` header
does the same over the digest of the POSTed bytes. Either way the caller's name is the one its signed join
gave, under the key the monitors vouch for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from meshkit.core import Address, CodecError, EventEnvelope, to_plain
from meshkit.mesh._table import RoutingTable
from meshkit.mesh._vouched import ORIGIN, VouchedKeys
from meshkit.security import CALLER_HEADER, Identity, ReplayGuard, Stamp, signed_by

log = logging.getLogger("meshkit.mesh.callers")

MAX_HEADER = 400  # characters of base64: origin, stamp and signature take ~230


class NotProven(ValueError):
    """A caller's proof that does not hold."""


class CallerProofs:
    """This app's side of both: it signs its requests to restricted routes and checks those it is sent."""

    def __init__(
        self,
        origin: str,
        identity: Identity,
        vouched: VouchedKeys,
        table: RoutingTable,
        guarded: Callable[[str | None], bool] = lambda to: True,
    ) -> None:
        self.origin, self.identity, self.vouched, self.table = origin, identity, vouched, table
        self.guarded = guarded  # True when this app's route `to` takes calls only from some apps
        self._stamp = Stamp()
        self._replays = (
            ReplayGuard()
        )  # requests are numbered apart from control messages: a guard of their own

    # -- the caller's side ---------------------------------------------------------------------------------
    def restricted(self, recipient: str, to: str | None) -> bool:
        """True when `recipient` said its route takes only some apps: the request then carries a proof."""
        peer = self.table.peers.get(recipient)
        if peer is None or not peer.allow or not to:
            return False
        route, _ = Address.parse(to)
        return route in peer.allow

    def restricted_anywhere(self, to: str | None) -> bool:
        """True when a peer said its `to` route takes only some apps (an HTTP caller then proves itself)."""
        if not to:
            return False
        route, _ = Address.parse(to)
        return any(route in peer.allow for peer in self.table.peers.values())

    def sign(self, event: EventEnvelope, recipient: str) -> None:
        stamped = self._stamp({"origin": self.origin})
        signed = self.identity.sign(_statement(stamped, recipient, event))
        event.proof = {**stamped, "sig": signed["sig"]}

    def header(self, posted: bytes) -> str:
        """The `x-mesh-caller` header for a POST of `posted` to `/api/event`."""
        stamped = self._stamp({"origin": self.origin})
        signed = self.identity.sign(_http_statement(stamped, posted))
        packed = msgpack.packb({**stamped, "sig": signed["sig"]}, use_bin_type=True)
        return base64.b64encode(packed).decode()

    # -- the callee's side ---------------------------------------------------------------------------------
    def identify(self, event: EventEnvelope, via: str | None, patient: bool = False) -> bool:
        """Set `event.caller` from the direct link it came over (`via`), or else from its proof; a proof that
        does not hold is logged and leaves the caller unproven (a restricted route then answers 403).
        `patient`: False, and nothing set, when a guarded route's caller is not in the routing table yet:
        it joined a moment ago and its card is on its way (access.md#a-caller-not-known-yet)."""
        proof = event.proof
        caller = via if via is not None else proof.get("origin") if isinstance(proof, dict) else None
        if patient and isinstance(caller, str) and caller not in self.table.peers and self.guarded(event.to):
            return False
        if via is not None:
            self._named(event, via)
            return True
        if proof is None:
            return True
        try:
            origin = self._check(proof, lambda stamped: _statement(stamped, self.origin, event))
        except NotProven as exc:
            log.warning("Event %s for %s: its caller proof does not hold: %s", event.id, event.to, exc)
            return True
        self._named(event, origin)
        return True

    def identify_http(self, event: EventEnvelope, header: str, posted: bytes) -> None:
        """As `identify`, for Event over HTTP; NotProven when the header does not hold."""
        if len(header) > MAX_HEADER:
            raise NotProven(f"the {CALLER_HEADER} header is over {MAX_HEADER} characters")
        try:
            proof = msgpack.unpackb(base64.b64decode(header, validate=True), raw=False)
        except (binascii.Error, ValueError, msgpack.UnpackException) as exc:
            raise NotProven(f"the {CALLER_HEADER} header is not base64 MsgPack: {exc}") from None
        if not isinstance(proof, dict):
            raise NotProven(f"the {CALLER_HEADER} header is not a map")
        origin = self._check(proof, lambda stamped: _http_statement(stamped, posted))
        self._named(event, origin)

    def _check(self, proof: object, statement: Any) -> str:
        if not isinstance(proof, dict):
            raise NotProven("proof is not a map")
        origin = proof.get("origin")
        if not isinstance(origin, str) or not ORIGIN.fullmatch(origin):
            raise NotProven("a proof without a valid origin")
        key = self.vouched.key(origin)
        if key is None:
            raise NotProven(f"{origin} is not vouched for by a presence monitor")
        stamped = {"origin": origin, "ts": proof.get("ts"), "seq": proof.get("seq")}
        try:
            signed = {**statement(stamped), "sig": proof.get("sig")}
        except CodecError as exc:
            raise NotProven(f"its body cannot be digested: {exc}") from None
        if not signed_by(key, signed):
            raise NotProven(f"not signed by the key vouched for {origin}")
        replayed = self._replays.check(origin, stamped)
        if replayed is not None:
            raise NotProven(f"a replay: {replayed}")
        return origin

    def _named(self, event: EventEnvelope, origin: str) -> None:
        peer = self.table.peers.get(origin)
        event.caller_origin = origin
        event.caller = peer.name if peer is not None else None  # vouched, but its join not heard yet


def _statement(stamped: dict[str, Any], recipient: str, event: EventEnvelope) -> dict[str, Any]:
    """What a broker request's proof signs (access.md#over-the-broker)."""
    return {
        "type": "call",
        "origin": stamped["origin"],
        "recipient": recipient,
        "id": event.id,
        "to": event.to,
        "body": hashlib.sha256(_packed(event.body)).digest(),
        "ts": stamped["ts"],
        "seq": stamped["seq"],
    }


def _http_statement(stamped: dict[str, Any], posted: bytes) -> dict[str, Any]:
    """What an `x-mesh-caller` header signs (access.md#over-http)."""
    return {
        "type": "call-http",
        "origin": stamped["origin"],
        "body": hashlib.sha256(posted).digest(),
        "ts": stamped["ts"],
        "seq": stamped["seq"],
    }


def _packed(body: Any) -> bytes:
    if isinstance(body, bytearray | memoryview):  # a body joined from segments: the same bytes
        body = bytes(body)
    try:
        packed = msgpack.packb(to_plain(body), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(str(exc)) from None
    assert isinstance(packed, bytes)
    return packed
