"""Two hops of a trace across processes: run twice, the edge with ``-Dpeer.url=<the other's /api/event>``.

``GET /api/chain/{n}`` (a REST endpoint) -> ``chain.local`` (in this process) -> ``chain.remote`` over Event
over HTTP at ``peer.url`` -> ``chain.leaf`` (in that process). Each hop reports the trace it saw.
"""

from __future__ import annotations

import logging
from typing import Any

from meshkit import FunctionRegistry, PostOffice, create_app, current_platform

registry = FunctionRegistry()
log = logging.getLogger("meshkit.tests.traced")  # under `meshkit`: the app's log handler and format


def _seen(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "route": headers["my_route"],
        "trace_id": headers.get("my_trace_id"),
        "path": headers.get("my_trace_path"),
    }


@registry.route("chain.local")
async def chain_local(headers: dict[str, str], body: Any) -> dict[str, Any]:
    peer = current_platform().config.get("peer.url")
    assert peer, "peer.url is not set"
    reply = await PostOffice().request("chain.remote", body, endpoint=peer, timeout=5)
    return {
        "local": _seen(headers),
        "remote": reply.body,
        "reply": {"status": reply.status, "trace_id": reply.trace_id, "trace_path": reply.trace_path},
    }


@registry.route("chain.remote")
async def chain_remote(headers: dict[str, str], body: Any) -> dict[str, Any]:
    log.info("chain.remote asks chain.leaf")
    leaf = await PostOffice().request("chain.leaf", body)
    return {"remote": _seen(headers), "leaf": leaf.body}


@registry.route("chain.leaf")
def chain_leaf(headers: dict[str, str], body: Any) -> dict[str, Any]:  # a plain def: runs in a thread
    return _seen(headers)


app = create_app(functions=registry)


@app.get("/api/chain/{n}")
async def chain(n: int) -> Any:
    reply = await PostOffice().request("chain.local", {"n": n}, timeout=8)
    return reply.body


@app.get("/api/untraced")
async def untraced() -> Any:
    reply = await PostOffice().request("chain.leaf", None)
    return reply.body
