"""`GET /asyncapi.json`: an AsyncAPI 3.0 document of an app's public functions.

Each public route is a channel whose address is the route, and an operation named by the route: the app
`receive`s a request there and replies on a channel with no fixed address (the caller's inbox, the event's
`reply_to`). The messages' payloads are the functions' JSON Schemas (meshkit.core contracts), their named
models under `components.schemas`. The MsgPack event envelope that carries them is docs/protocol/envelope.md;
the servers are the broker (`bootstrap.servers`, when the app is on the mesh) and Event over HTTP.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from meshkit.core import FunctionSpec, Platform, contract_hints, schema_of

ASYNCAPI_VERSION = "3.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"
CONTENT_TYPE = "application/msgpack"  # what an event's body travels as (docs/protocol/envelope.md)

_HEADERS = {
    "type": "object",
    "description": "The event's headers: text keys and values (docs/protocol/envelope.md)",
    "additionalProperties": {"type": "string"},
}


def asyncapi_document(platform: Platform, http_host: str | None = None) -> dict[str, Any]:
    """The AsyncAPI document of `platform`'s public functions; `http_host`: host[:port] this app answers
    Event over HTTP on (the request's own, so that the document names the address it was read from)."""
    schemas: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in sorted((s for s in platform.functions() if not s.private), key=lambda s: s.route):
        request, reply = f"{spec.route}.request", f"{spec.route}.reply"
        body, result = contract_hints(spec)
        messages[request] = _message(spec, "request", _payload(body, spec.route, schemas))
        messages[reply] = _message(spec, "reply", _payload(result, spec.route, schemas))
        channels[spec.route] = {
            "address": spec.route,
            "title": spec.route,
            "messages": {"request": {"$ref": f"#/components/messages/{request}"}},
        }
        channels[reply] = {
            "address": None,  # the caller's inbox: the request's reply_to
            "description": "Where a reply goes: the request's reply_to (the caller's inbox)",
            "messages": {"reply": {"$ref": f"#/components/messages/{reply}"}},
        }
        operations[spec.route] = {
            "action": "receive",
            "title": spec.route,
            "summary": _summary(spec),
            "channel": {"$ref": f"#/channels/{spec.route}"},
            "messages": [{"$ref": f"#/channels/{spec.route}/messages/request"}],
            "reply": {
                "address": {"location": "$message.header#/reply_to"},
                "channel": {"$ref": f"#/channels/{reply}"},
                "messages": [{"$ref": f"#/channels/{reply}/messages/reply"}],
            },
            "x-meshkit-instances": spec.instances,
            "x-meshkit-idempotent": spec.idempotent,
            "x-meshkit-streaming": spec.streaming,
            **({"x-meshkit-allow": sorted(spec.allow)} if spec.allow is not None else {}),
        }
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": platform.name,
            "version": platform.version or "0",
            "description": platform.description or f"The public functions of {platform.name}",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": _servers(platform, http_host),
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
    return document


def _payload(hint: Any, route: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """The payload schema for `hint`; the models it names (itself too, if it is one) go to `schemas`."""
    payload = schema_of(hint, route, ref_template=REF_TEMPLATE)
    schemas.update(payload.pop("$defs", {}))
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        name = hint.__name__
        schemas[name] = payload
        return {"$ref": REF_TEMPLATE.format(model=name)}
    return payload


def _message(spec: FunctionSpec, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    what = "one segment of the stream" if kind == "reply" and spec.streaming else f"the {kind}'s body"
    return {
        "name": f"{spec.route}.{kind}",
        "title": f"{spec.route} {kind}",
        "summary": f"{spec.route}: {what}",
        "contentType": CONTENT_TYPE,
        "headers": dict(_HEADERS),
        "payload": payload,
    }


def _summary(spec: FunctionSpec) -> str:
    parts = [f"at most {spec.instances} at once"]
    parts.append("safe to retry" if spec.idempotent else "never sent twice")
    if spec.streaming:
        parts.append("answers with a stream of segments")
    if spec.allow is not None:
        parts.append("callable only by " + (", ".join(sorted(spec.allow)) or "its own app"))
    return "; ".join(parts)


def _servers(platform: Platform, http_host: str | None) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    config = platform.config
    if config.get("cloud.connector", "none") == "kafka":
        for n, host in enumerate(config.get_list("bootstrap.servers")):
            servers[f"kafka-{n}" if n else "kafka"] = {
                "host": host,
                "protocol": "kafka",
                "description": "The mesh's broker: events to a route's instances, replies to inboxes",
            }
    if http_host:
        servers["http"] = {
            "host": http_host,
            "protocol": "http",
            "pathname": "/api/event",
            "description": "Event over HTTP: POST one MsgPack event envelope, read its reply",
        }
    return servers
