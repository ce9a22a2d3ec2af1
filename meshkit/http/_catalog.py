"""The route catalog (`/info/routes?detail=true`): every public route of the mesh with its contract.

An app knows its own functions' contracts (meshkit.core contracts) and its peers' from their `contracts`
control messages (docs/protocol/control.md). A route its peers serve but never described (an app that does
not publish contracts, or one whose message has not arrived yet) is listed with "any" schemas and
`"described": false`; instances of one route that describe it differently (a deploy in progress) are listed
under `"differs"`.
"""

from __future__ import annotations

from typing import Any

from meshkit.core import Platform, contract


def route_catalog(platform: Platform) -> dict[str, dict[str, Any]]:
    """route -> {input, output, idempotent, streaming, described, instances: {origin: {app, instances}}},
    and `allow` for a route that takes calls only from some apps."""
    by_route: dict[str, dict[str, tuple[str, dict[str, Any] | None]]] = {}
    for spec in platform.functions():
        if not spec.private:
            by_route.setdefault(spec.route, {})[platform.origin] = (platform.name, contract(spec))
    if platform.remote is not None:
        routes, nodes = platform.remote.describe()
        published = platform.remote.contracts()
        for route, origins in routes.items():
            for origin in origins:
                name = str(nodes.get(origin, {}).get("name", ""))
                by_route.setdefault(route, {})[origin] = (name, published.get(origin, {}).get(route))
    return {route: _entry(by_route[route]) for route in sorted(by_route)}


def _entry(origins: dict[str, tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    described = {o: c for o, (_, c) in sorted(origins.items()) if c is not None}
    first = next(iter(described.values()), None)
    entry: dict[str, Any] = {
        "input": first["input"] if first else {},
        "output": first["output"] if first else {},
        "idempotent": bool(first and first["idempotent"]),
        "streaming": bool(first and first["streaming"]),
        "described": first is not None,
        "instances": {
            origin: {"app": name, "instances": c["instances"] if c is not None else None}
            for origin, (name, c) in sorted(origins.items())
        },
    }
    if first is not None and first.get("allow") is not None:
        entry["allow"] = first["allow"]  # only these apps may call it (docs/protocol/access.md)
    if first is not None:
        differs = sorted(o for o, c in described.items() if _shape(c) != _shape(first))
        if differs:
            entry["differs"] = differs
    return entry


def _shape(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["input"], c["output"], c["idempotent"], c["streaming"], c.get("allow"))
