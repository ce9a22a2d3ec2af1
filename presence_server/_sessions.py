"""The apps connected to this monitor, and the notices it pushes to them over their websockets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket

log = logging.getLogger("presence_server")

MAX_PENDING_NOTICES = 1000  # per app: one that reads none of them is dropped, and gets the list again


@dataclass
class Session:
    websocket: WebSocket
    last_seen: float
    group: int
    seq: int = 0
    updated: str = ""
    notices: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_PENDING_NOTICES))

    async def send_notices(self) -> None:
        """Runs while the session does: one writer, so notices reach the app in the order they were made."""
        while True:
            await self.websocket.send_text(await self.notices.get())


class Sessions(dict[str, Session]):
    """origin -> its session on this monitor."""

    def notify(
        self, group: int, about: str, notice: dict[str, Any], on_overflow: Callable[[Session], None]
    ) -> None:
        """Queue `notice` for every app of `group` here but the one it is about."""
        text = json.dumps(notice)
        for origin, session in list(self.items()):
            if session.group != group or origin == about:
                continue
            try:
                session.notices.put_nowait(text)
            except asyncio.QueueFull:
                log.warning(
                    "Member %s reads no mesh notices (%d waiting): disconnected", origin, MAX_PENDING_NOTICES
                )
                on_overflow(session)
