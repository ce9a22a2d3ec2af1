"""A platform of one's own for in-process tests: its functions come from a registry the test fills."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from meshkit import AppConfig, FunctionSpec, Platform


@asynccontextmanager
async def running_platform(
    registry: Iterable[FunctionSpec] | None = None, name: str = "test-app", **properties: str
) -> AsyncIterator[Platform]:
    config = AppConfig.load(argv=[], environ={}, overrides=properties)
    platform = Platform(config, name=name, functions=list(registry or []))
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()
