"""The REST example's own function."""

from __future__ import annotations

from typing import Any

from meshkit import current_platform, route


@route("hello.world", instances=10, idempotent=True)
async def hello_world(headers: dict[str, str], body: Any, instance: int) -> dict[str, Any]:
    """The REST example's own echo, so a peer sees two apps serving `hello.world`."""
    return {"headers": headers, "body": body, "instance": instance, "origin": current_platform().origin}
