"""One app's platform for a test: started and equipped as `install` equips it, without a server or mesh."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from meshkit.config import AppConfig
from meshkit.core import FunctionRegistry, FunctionSpec, Platform, default_registry
from meshkit.http import equip

Functions = FunctionRegistry | Iterable[FunctionSpec]


def isolated_config(
    properties: Mapping[str, str] | None = None, config_dir: str | Path | None = None
) -> AppConfig:
    """`properties` over `config_dir`'s application.properties (when given), and nothing else: no environment
    variables, no -D arguments, so that a test gives the same result on any machine."""
    search = [Path(config_dir)] if config_dir else []
    return AppConfig.load(search_paths=search, argv=[], environ={}, overrides=properties)


def specs_of(functions: Functions | None, scan: Sequence[str] = ()) -> list[FunctionSpec]:
    """`functions` (a registry or specs), else what `@route` declared in `scan`'s packages (imported first),
    else every `@route` function declared: the choice `create_app` makes."""
    if functions is not None:
        return list(functions)
    for module in scan:
        importlib.import_module(module)
    return default_registry.select(scan)


@asynccontextmanager
async def running_platform(
    functions: Functions | None = None,
    *,
    name: str = "test-app",
    scan: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    config_dir: str | Path | None = None,
) -> AsyncIterator[Platform]:
    """``async with running_platform(registry, **...) as platform:`` a started platform, stopped after."""
    config = isolated_config({"application.name": name, **(properties or {})}, config_dir)
    platform = Platform(config, name=name, functions=specs_of(functions, scan))
    equip(platform)
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()
