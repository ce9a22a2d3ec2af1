"""The loopback health check: a probe record sent through the broker and seen coming back.

The probe is a control record (docs/protocol/records.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from meshkit.connectors import ConnectorError
from meshkit.core import AppError


class Loopback:
    """Probes in flight by id: `run` sends one with `send` and waits; `arrived` is called by the consumer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._probes: dict[str, asyncio.Future[None]] = {}

    async def run(self, send: Callable[[dict[str, str]], Awaitable[object]], timeout: float = 5.0) -> float:
        """Milliseconds from sending the probe to seeing it back; AppError 408/503 when it does not return."""
        probe = f"{self.prefix}-{time.monotonic_ns()}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probes[probe] = future
        started = time.perf_counter()
        try:
            await send({"type": "loopback", "id": probe})
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AppError(408, f"Loopback test timeout after {timeout:g} s") from None
        except ConnectorError as exc:
            raise AppError(503, f"Loopback test failed: {exc}") from exc
        finally:
            self._probes.pop(probe, None)
        return (time.perf_counter() - started) * 1000

    def arrived(self, probe: object) -> None:
        future = self._probes.get(str(probe))
        if future is not None and not future.done():
            future.set_result(None)
