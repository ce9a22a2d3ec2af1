"""What a monitor checks of an app's hello, keep-alives and card (docs/protocol/presence.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import WebSocket

from meshkit.mesh import CARD, ORIGIN, contracts_digest
from meshkit.security import public_key, signed_by
from presence_server._info import parse_iso

HELLO_FIELDS = {"name": str, "version": str, "personality": str, "group": int, "created": str, "key": str}
MAX_CARD_CHARS = 256 * 1024  # a card, and the contracts beside it, as JSON: each at most this


class Refused(Exception):
    """A websocket the monitor will not serve; the message says why (the app logs it)."""


async def read_hello(websocket: WebSocket, origin: str, groups: int) -> dict[str, Any]:
    """The app's hello, checked in the documented order; Refused says what is wrong."""
    if not ORIGIN.fullmatch(origin):
        raise Refused(f"invalid origin {origin[:80]!r}: yyyymmdd + 32 hex characters expected")
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), 10.0)
        hello = json.loads(raw)
    except TimeoutError:
        raise Refused("no hello within 10 s") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise Refused(f"hello is not a JSON text message ({type(exc).__name__})") from None
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise Refused("the first message must be a hello")
    for key, kind in HELLO_FIELDS.items():
        if not isinstance(hello.get(key), kind) or isinstance(hello.get(key), bool):
            raise Refused(f"hello field '{key}' must be a {kind.__name__}")
    try:
        public_key(hello["key"])
    except ValueError as exc:
        raise Refused(f"hello field 'key' must be an Ed25519 public key ({exc})") from None
    if not 1 <= hello["group"] <= groups:
        raise Refused(f"closed user group {hello['group']} outside 1..{groups}")
    if any(len(str(hello[k])) > 200 for k in HELLO_FIELDS):
        raise Refused("hello field too long")
    if parse_iso(hello["created"]) is None:
        raise Refused("hello field 'created' must be an ISO-8601 time")
    if not isinstance(hello.get("cards", False), bool):
        raise Refused("hello field 'cards' must be a boolean")
    return hello


def check_card(message: dict[str, Any], origin: str, key: str) -> bool:
    """True when `message` (a `card` message) brings a card: the app's own, signed under `key`,
    with the contracts its digest names (or none); False when it brings none; ValueError when it is bad."""
    card, contracts = message.get("card"), message.get("contracts")
    if card is None:
        return False
    if not isinstance(card, dict) or card.get("type") != CARD or card.get("origin") != origin:
        raise ValueError("not a card of this origin")
    if len(json.dumps(card)) > MAX_CARD_CHARS or len(json.dumps(contracts)) > MAX_CARD_CHARS:
        raise ValueError(f"a card and its contracts may have at most {MAX_CARD_CHARS} characters each")
    if not signed_by(public_key(key), card):
        raise ValueError("not signed by the key of the hello")
    digest = card.get("contracts")
    if digest is not None and (not isinstance(contracts, dict) or contracts_digest(contracts) != digest):
        raise ValueError("the contracts are not those the card's digest names")
    return True


def keep_alive_seq(message: object) -> int:
    """The sequence number of an `alive` message; ValueError when `message` is not a well-formed one."""
    seq = message.get("seq") if isinstance(message, dict) and message.get("type") == "alive" else None
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**53:
        raise ValueError("not a keep-alive")
    return seq
