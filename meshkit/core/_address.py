"""Where an event goes: `route`, `route@origin` (that app instance's function) or `@origin` (its reply inbox).

Parsed here and nowhere else; see docs/protocol/envelope.md for the `to` and `reply_to` fields.
"""

from __future__ import annotations

from typing import NamedTuple


class Address(NamedTuple):
    """`route` and `origin` of an address; route "" is a reply inbox, origin None any instance."""

    route: str
    origin: str | None = None

    @classmethod
    def parse(cls, text: str) -> Address:
        route, _, origin = text.partition("@")
        return cls(route, origin or None)

    @staticmethod
    def inbox(origin: str) -> str:
        """The reply inbox of an app instance: `@origin`."""
        return "@" + origin

    @staticmethod
    def of(route: str, origin: str) -> str:
        """The function `route` at the app instance `origin` only: `route@origin`."""
        return f"{route}@{origin}"

    @property
    def is_inbox(self) -> bool:
        return not self.route

    def __str__(self) -> str:
        return self.route if self.origin is None else f"{self.route}@{self.origin}"
