"""What apps say to each other of themselves (join, peer, routes, contracts, and the card that stands for a
join): each checked as it is read (docs/protocol/control.md#how-an-app-handles-a-group-message)."""

from __future__ import annotations

from typing import Any

from meshkit.core import FunctionSpec
from meshkit.mesh._frames import FrameError
from meshkit.mesh._table import Peer
from meshkit.mesh._topics import TopicLayout

PEER_MESSAGES = ("join", "peer", "routes", "contracts")  # what apps say to each other; the rest: monitors
MAX_CONTRACTS = 2000  # routes in a peer's contracts message, at most


def peer_of(layout: TopicLayout, message: dict[str, Any]) -> Peer:
    """The peer a join, peer message or card describes; FrameError when it is not well formed."""
    fields = {k: message.get(k) for k in ("origin", "name", "version", "personality", "topic")}
    if not all(isinstance(v, str) for v in fields.values()):
        raise FrameError("join without origin, name, version, personality and topic")
    try:
        topic = layout.parse(str(fields["topic"]))
    except ValueError as exc:
        raise FrameError(str(exc)) from exc
    return Peer(
        str(fields["origin"]),
        str(fields["name"]),
        str(fields["version"]),
        str(fields["personality"]),
        topic,
        set(routes_in(message.get("routes"))),
        batches=message.get("batches") is True,
        idempotent=set(routes_in(message.get("idempotent"))),
        allow=allowed(message.get("allow")),
    )


def allow_map(specs: list[FunctionSpec]) -> dict[str, list[str]]:
    return {s.route: sorted(s.allow) for s in specs if s.allow is not None and not s.private}


def allowed(value: object) -> dict[str, list[str]]:
    """A peer's `allow`: route -> the app names it takes calls from (access.md); FrameError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FrameError("allow must map routes to lists of app names")
    return {route: routes_in(names) for route, names in value.items()}


def routes_in(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise FrameError("routes must be a list of strings")
    return value


def parse_contracts(value: object) -> dict[str, dict[str, Any]]:
    """A peer's contracts, checked: route -> {input, output: JSON Schema objects, instances, idempotent,
    streaming}; anything else in it is a FrameError."""
    if not isinstance(value, dict) or len(value) > MAX_CONTRACTS:
        raise FrameError(f"contracts must be a map of at most {MAX_CONTRACTS} routes")
    checked: dict[str, dict[str, Any]] = {}
    for route, entry in value.items():
        if not isinstance(route, str) or not isinstance(entry, dict):
            raise FrameError("contracts must map route names to contracts")
        schemas = (entry.get("input", {}), entry.get("output", {}))
        instances = entry.get("instances")
        if not all(isinstance(s, dict) for s in schemas) or type(instances) is not int:
            raise FrameError(f"the contract of {route[:80]!r} needs input and output schemas and instances")
        checked[route] = {
            "input": schemas[0],
            "output": schemas[1],
            "instances": instances,
            "idempotent": entry.get("idempotent") is True,
            "streaming": entry.get("streaming") is True,
            **({"allow": routes_in(entry["allow"])} if entry.get("allow") is not None else {}),
            **({"omitted": True} if entry.get("omitted") is True else {}),
        }
    return checked
