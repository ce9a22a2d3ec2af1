"""The connector watchdog: when the broker stays unusable, exit non-zero so the orchestrator restarts us.

A broker that restarts with memory storage (the development broker) forgets every topic: an app cannot
recover its partition, its peers' partitions or its group on its own in a way that is always correct, so
it says so clearly and exits with EX_TEMPFAIL (75); a restarted app joins the mesh afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("meshkit.mesh.watchdog")

EXIT_CONNECTOR_LOST = 75  # EX_TEMPFAIL: try again later


class ConnectorWatchdog:
    def __init__(
        self,
        what: str,
        probe: Callable[[], Awaitable[object]],
        *,
        interval: float,
        give_up_after: float,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.what = what
        self.probe = probe
        self.interval = interval
        self.give_up_after = give_up_after
        self._exit = exit
        self.failing_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.give_up_after > 0:
            self._task = asyncio.create_task(self._watch(), name="meshkit:connector-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.wait_for(self.probe(), max(self.interval, 1.0) * 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            else:
                if self.failing_since is not None:
                    log.info("%s works again", self.what)
                self.failing_since = None

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
            log.warning("%s failed its check: %s", self.what, exc or type(exc).__name__)
        if now - self.failing_since >= self.give_up_after:
            log.critical(
                "%s unusable for %.0f s (%s): exiting with code %d so the orchestrator restarts this app",
                self.what,
                now - self.failing_since,
                exc or type(exc).__name__,
                EXIT_CONNECTOR_LOST,
            )
            logging.shutdown()
            self._exit(EXIT_CONNECTOR_LOST)
