"""Serving an app with uvicorn so that SIGTERM drains it first (`meshkit run`).

uvicorn stops listening as soon as a signal comes. Here the first SIGTERM or SIGINT drains every meshkit
platform of the process first (peers stop routing to it, what is in flight finishes, `/health` is DOWN),
while HTTP is still served, so that Kubernetes sees the pod unready before its port closes; then uvicorn
shuts down as usual. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

import uvicorn

from meshkit.core import running_platforms

log = logging.getLogger("meshkit.app")

STARTUP_FAILURE = 3  # the exit status of uvicorn.run when the app does not start


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._signal: int | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self._signal is not None or self.should_exit or loop is None or not running_platforms():
            if self._signal is not None and loop is not None:  # a second signal: stop draining now
                loop.call_soon_threadsafe(self._abandon)
            super().handle_exit(sig, frame)
            return
        self._signal = sig
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await asyncio.gather(*(platform.drain() for platform in running_platforms()))
        finally:
            super().handle_exit(self._signal or 15, None)  # what uvicorn would have done at once

    def _abandon(self) -> None:
        log.warning("Second signal: stopping without finishing the drain")
        for platform in running_platforms():
            platform.abandon_drain()


def serve(app: str, *, host: str, port: int, log_level: str, tls: Mapping[str, Any] | None = None) -> None:
    """Run `app` ("module:attribute") with uvicorn, draining on the first SIGTERM/SIGINT; exits as
    `uvicorn.run` does (status 3 when the app failed to start). `tls`: uvicorn's ssl_* settings
    (meshkit.security.server_tls), to serve HTTPS and WSS."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, ws="websockets-sansio", **dict(tls or {})
    )
    server = DrainingServer(config)
    try:
        server.run()
    except KeyboardInterrupt:  # the SIGINT uvicorn raises again once it has shut down
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
