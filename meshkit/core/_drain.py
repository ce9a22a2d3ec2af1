"""Draining: what a platform does between SIGTERM and stopping, so that no request is lost (the hooks: the
mesh's, which tells the peers and waits for what is on its way; then the platform's own work in flight)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("meshkit.platform")

DEFAULT_DRAIN_TIMEOUT = 20.0  # within Kubernetes' default grace of 30 s, with time left to stop


class Drain:
    """One drain, started at once: `hooks(deadline)` side by side, then until `in_flight()` is 0, within
    `timeout` seconds."""

    def __init__(
        self,
        name: str,
        hooks: list[Callable[[float], Awaitable[None]]],
        in_flight: Callable[[], int],
        timeout: float,
    ) -> None:
        self.name = name
        self._in_flight = in_flight
        self._task = asyncio.get_running_loop().create_task(self._run(hooks, timeout), name="meshkit:drain")

    async def wait(self) -> None:
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.cancelled():  # our caller was cancelled, not the drain
                raise

    def abandon(self) -> None:
        self._task.cancel()

    async def _run(self, hooks: list[Callable[[float], Awaitable[None]]], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("%s draining: finishing what is in flight (at most %g s)", self.name, timeout)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(hook(started + timeout) for hook in hooks))
                while self._in_flight():  # noqa: ASYNC110 (pools signal no "idle"; polled briefly, once)
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning(
                "%s drain.timeout of %g s passed with %d events in flight",
                self.name,
                timeout,
                self._in_flight(),
            )
        except Exception:
            log.exception("%s drain failed", self.name)
        else:
            log.info("%s drained in %.2f s", self.name, loop.time() - started)
