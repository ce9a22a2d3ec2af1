"""``meshkit routes APP_URL`` and ``meshkit mesh MONITOR_URL``: the distributed routing table as one app
sees it (its ``GET /info/routes``) and the mesh as a presence monitor sees it (its ``GET /api/mesh``)."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from meshkit.cli._common import (
    DEFAULT_TIMEOUT,
    EXIT_CODES,
    NOT_MESHKIT,
    OK,
    add_connection_options,
    count,
    fail,
    get_json,
    http_url,
    mesh_key,
    table,
    tls_settings,
    to_json,
    with_path,
)

ROUTES_PATH = "/info/routes"
MESH_PATH = "/api/mesh"


@dataclass(frozen=True)
class InspectOptions:
    """What ``meshkit routes`` or ``meshkit mesh`` was asked to do (``url``: the app's or monitor's base)."""

    command: str
    url: str
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False
    key: str | None = None
    tls: dict[str, str] = field(default_factory=dict)  # tls.* for https:// URLs (--cacert, TLS_CA, ...)


def add_inspect(commands: Any) -> None:
    """The ``routes`` and ``mesh`` subcommands on ``commands`` (argparse's subparsers action)."""
    routes = commands.add_parser(
        "routes",
        help="print the distributed routing table as an app sees it",
        description=f"Print the distributed routing table as the app at APP_URL sees it ({ROUTES_PATH}).",
        epilog=EXIT_CODES + "\n\nexample:\n  meshkit routes http://127.0.0.1:8083",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    routes.add_argument("url", type=http_url, metavar="APP_URL", help="e.g. http://127.0.0.1:8083")
    add_connection_options(routes)
    mesh = commands.add_parser(
        "mesh",
        help="print the mesh as a presence monitor sees it",
        description=(
            f"Print the apps, their virtual topics, the monitors and the topics as the presence monitor at "
            f"MONITOR_URL sees them ({MESH_PATH}). A presence.url (ws://host:port/ws/presence) will do."
        ),
        epilog=EXIT_CODES + "\n\nexample:\n  meshkit mesh http://127.0.0.1:8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mesh.add_argument("url", type=http_url, metavar="MONITOR_URL", help="e.g. http://127.0.0.1:8080")
    add_connection_options(mesh)


def inspect_options(args: argparse.Namespace) -> InspectOptions:
    return InspectOptions(args.command, args.url, args.timeout, args.json, args.key, tls_settings(args))


def inspect(options: InspectOptions) -> int:
    key = mesh_key(options.key)
    if options.command == "routes":
        url = with_path(options.url, ROUTES_PATH)
        url += "" if urlsplit(url).query else "?detail=true"  # the catalog too, where the app has one
        document = asyncio.run(get_json(url, key, options.timeout, "a meshkit app", options.tls))
        routing = document.get("routing") if isinstance(document, dict) else None
        if not isinstance(routing, dict) or not isinstance(routing.get("routes"), dict):
            fail(NOT_MESHKIT, f"{url}: no routing table in the answer: is this a meshkit app?")
        print(to_json(document) if options.json else render_routes(document))
    else:
        url = with_path(options.url, MESH_PATH, strip=("/ws/presence",))
        document = asyncio.run(get_json(url, key, options.timeout, "a presence monitor", options.tls))
        if not isinstance(document, dict) or not isinstance(document.get("apps"), list):
            fail(NOT_MESHKIT, f"{url}: no mesh in the answer: is this a presence monitor?")
        print(to_json(document) if options.json else render_mesh(document))
    return OK


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def render_routes(document: dict[str, Any]) -> str:
    """The routing table, a row per route and origin serving it, then the app instances it knows.

    Function instances and the streaming flag come from the route catalog (``/info/routes?detail=true``)
    of an app that has one; whether a peer's route is safe to retry, from its node (its join).
    """
    me = document.get("origin")
    routing = _dict(document.get("routing"))
    routes = _dict(routing.get("routes"))
    nodes = _dict(routing.get("nodes"))
    catalog = _dict(document.get("catalog"))
    rows = []
    for route, origins in sorted(routes.items()):
        entry = _dict(catalog.get(route))
        for origin, said in sorted(_dict(origins).items()):
            node = _dict(nodes.get(origin))
            name, _, personality = str(said).partition(", ")
            safe = route in _list(node.get("idempotent")) or (
                origin == me and entry.get("idempotent") is True
            )
            flags = ["idempotent"] if safe else []
            flags += ["streaming"] if entry.get("streaming") is True else []
            flags += [flag for flag in ("draining", "ejected") if node.get(flag)]
            instances = _dict(_dict(entry.get("instances")).get(origin)).get("instances")
            rows.append(
                [
                    route,
                    f"{name} ({personality})" if personality else name,
                    origin,
                    instances,
                    "local" if origin == me else node.get("path"),
                    ",".join(flags),
                ]
            )
    title = (
        f"Routing table of {document.get('app', '?')} ({me}): {count(len(routes), 'route')}, "
        f"{count(len(nodes), 'app instance')}"
    )
    node_rows = []
    for origin, node in sorted(nodes.items(), key=lambda item: (item[0] != me, item[0])):
        node = _dict(node)
        state = "this app" if origin == me else "draining" if node.get("draining") else "up"
        if node.get("ejected"):
            state += ", ejected"
        if node.get("direct_failure"):
            state += f", direct failed: {node['direct_failure']}"
        node_rows.append(
            [
                origin,
                node.get("name"),
                node.get("version"),
                node.get("personality"),
                node.get("topic"),
                "local" if origin == me else node.get("path"),
                node.get("direct_address"),
                state,
            ]
        )
    parts = [
        title,
        "",
        table(["ROUTE", "APP", "ORIGIN", "INSTANCES", "PATH", "FLAGS"], rows) if rows else "(no routes)",
    ]
    headings = ["ORIGIN", "NAME", "VERSION", "PERSONALITY", "TOPIC", "PATH", "DIRECT ADDRESS", "STATE"]
    parts += ["", "App instances", table(headings, node_rows)]
    return "\n".join(parts)


def render_mesh(document: dict[str, Any]) -> str:
    """The monitor, the totals, then the apps (with their virtual topics), the monitors and the topics."""
    monitor = _dict(document.get("monitor"))
    totals = _dict(document.get("totals"))
    limits = _dict(document.get("limits"))
    connector = monitor.get("connector", "?")
    href = f" at {monitor['href']}" if monitor.get("href") else ""
    lines = [
        f"Presence monitor {monitor.get('id', '?')} ({monitor.get('name', '?')} {monitor.get('version', '')})"
        f", connector {connector}{href}, up {monitor.get('uptime', '?')}",
        f"{count(_int(totals.get('apps')), 'app')}, "
        f"{count(_int(totals.get('virtual_topics')), 'virtual topic')} "
        f"(at most {limits.get('virtual_topics', '?')}), {count(_int(totals.get('topics')), 'topic')}, "
        f"{count(_int(totals.get('monitors')), 'monitor')}",
    ]
    if document.get("warning"):
        lines.append(f"warning: {document['warning']}")
    apps = []
    for app in _list(document.get("apps")):
        app = _dict(app)
        routes = app.get("routes")
        apps.append(
            [
                app.get("name"),
                app.get("version"),
                app.get("type"),
                app.get("origin"),
                app.get("topic"),
                app.get("group"),
                app.get("monitor"),
                app.get("path"),
                app.get("elapsed"),
                ", ".join(routes) if isinstance(routes, list) else "?",
            ]
        )
    headings = [
        "NAME",
        "VERSION",
        "TYPE",
        "ORIGIN",
        "VIRTUAL TOPIC",
        "GROUP",
        "MONITOR",
        "PATH",
        "UP",
        "ROUTES",
    ]
    lines += ["", "Apps", table(headings, apps) if apps else "(none)"]
    monitors = [
        [
            m.get("id"),
            "yes" if m.get("me") else "",
            "yes" if m.get("alive") else "no",
            m.get("apps"),
            m.get("seen"),
        ]
        for m in map(_dict, _list(document.get("monitors")))
    ]
    lines += [
        "",
        "Monitors",
        table(["ID", "THIS", "ALIVE", "APPS", "SEEN"], monitors) if monitors else "(none)",
    ]
    topics = [[t.get("name"), t.get("partitions")] for t in map(_dict, _list(document.get("topics")))]
    lines += ["", "Topics", table(["NAME", "PARTITIONS"], topics) if topics else "(none)"]
    return "\n".join(lines)
