"""`/api/mesh/direct`: where peers open their direct connection to this app (docs/protocol/direct.md).

The mesh key is checked here, before the websocket is accepted (a wrong or missing one is answered 403);
proof of the caller's vouched identity, and the link itself, are the mesh's (meshkit/mesh/_direct.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from meshkit.core import Buffer
from meshkit.security import KEY_HEADER

if TYPE_CHECKING:
    from meshkit.mesh import DirectLinks

log = logging.getLogger("meshkit.mesh.direct")

DIRECT_PATH = (
    "/api/mesh/direct"  # meshkit.mesh.DIRECT_PATH: peers dial it (the mesh is loaded only by apps in one)
)


class ServerSocket:
    """A link's Socket over the accepted websocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send(self, message: bytes) -> None:
        from meshkit.mesh import LinkClosed

        try:
            await self.websocket.send_bytes(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise LinkClosed(f"connection lost ({type(exc).__name__})") from None

    async def send_pieces(self, pieces: tuple[bytes, Buffer]) -> None:
        await self.send(b"".join(pieces))  # one websocket message: joined (framed TCP writes them apart)

    async def recv(self) -> bytes:
        from meshkit.mesh import LinkClosed

        try:
            message = await self.websocket.receive()
        except (RuntimeError, OSError) as exc:
            raise LinkClosed(f"connection lost ({type(exc).__name__})") from None
        if message["type"] == "websocket.disconnect":
            raise LinkClosed(f"closed ({message.get('code', 1000)} {message.get('reason') or ''})".strip())
        data = message.get("bytes")
        if not isinstance(data, bytes):
            raise LinkClosed("a text message on a direct connection")
        return data

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code, reason)
        except (RuntimeError, OSError):  # closed already
            pass


class DirectEndpoint:
    """The ASGI app of `/api/mesh/direct`; `links` is set once the app has joined the mesh."""

    def __init__(self) -> None:
        self.links: DirectLinks | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        client = websocket.client
        remote = f"{client.host}:{client.port}" if client else "an unknown address"
        links = self.links
        if links is None or not links.enabled:
            log.warning("Refused a direct connection from %s: this app takes the broker only", remote)
            await websocket.close(1008, "this app takes no direct connections")
            return
        if not links.keys.accepts(websocket.headers.get(KEY_HEADER)):
            log.warning("Refused a direct connection from %s: missing or wrong mesh key", remote)
            await websocket.close(1008, "missing or wrong mesh key")
            return
        await websocket.accept()
        await links.accept(ServerSocket(websocket), remote)
