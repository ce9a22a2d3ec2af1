"""What the monitor's `/info` shows of the mesh (`additional_info`), in the Mercury actuator's shape."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from meshkit.core import elapsed_text
from meshkit.mesh import TopicLayout
from presence_server._state import MeshState


def parse_iso(value: object) -> _dt.datetime | None:
    """An ISO-8601 time (a trailing Z allowed); a naive one is taken as UTC; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.UTC)


def mesh_summary(state: MeshState, layout: TopicLayout, topics: dict[str, int]) -> dict[str, Any]:
    """`total`, `topics`, `virtual_topics`, `connections` and `monitors`, as the README shows them."""
    now = _dt.datetime.now(_dt.UTC)
    connections = []
    for c in sorted(state.connections.values(), key=lambda c: c.topic):
        created = parse_iso(c.created) or now
        connections.append(
            {
                "elapsed": elapsed_text((now - created).total_seconds()),
                "created": c.created,
                "origin": c.origin,
                "name": c.name,
                "topic": layout.virtual(c.topic).name,
                "monitor": c.monitor,
                "type": c.type,
                "updated": c.updated,
                "version": c.version,
                "seq": c.seq,
                "group": c.group,
            }
        )
    return {
        "total": {
            "topics": len(topics),
            "virtual_topics": len(state.holders),
            "connections": len(state.connections),
        },
        "topics": [f"{t} ({n})" for t, n in topics.items()],
        "virtual_topics": [
            f"{layout.virtual(t).name} -> {o}, {state.connections[o].name} v{state.connections[o].version}"
            for t, o in sorted(state.holders.items())
            if o in state.connections
        ],
        "connections": connections,
        "monitors": sorted(f"{m} - {iso}" for m, (_, iso) in state.monitors.items()),
    }
