"""The app of tests/http/test_actuators.py: a public and a private function, and switchable health
dependencies.

``health.database`` and ``health.cache`` answer ``type=info`` with {service, href} and ``type=health`` with a
message, or an AppError while switched off. ``health.switch`` (public, so a test reaches it over
``/api/event``) turns them: body ``{"dependency": "database" | "cache", "healthy": bool}``.
Which of them is mandatory or optional is configuration: ``-Dmandatory.health.dependencies=...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshkit import AppError, FunctionRegistry, create_app

registry = FunctionRegistry()
_healthy = {"database": True, "cache": True}


def _dependency(name: str, href: str, failure: AppError) -> Any:
    async def check(headers: dict[str, str], body: Any) -> Any:
        kind = headers.get("type")
        if kind == "info":
            return {"service": name, "href": href}
        if kind == "health":
            if not _healthy[name]:
                raise failure
            return f"{name} is fine"
        raise AppError(400, f"type must be info or health, got {kind!r}")

    return check


registry.route("health.database")(
    _dependency("database", "postgresql://127.0.0.1:5432/demo", AppError(503, "database is down"))
)
registry.route("health.cache")(
    _dependency("cache", "redis://127.0.0.1:6379", AppError(500, "cache unreachable"))
)


@registry.route("health.switch")
async def switch(body: dict[str, Any]) -> dict[str, bool]:
    _healthy[body["dependency"]] = bool(body["healthy"])
    return dict(_healthy)


@registry.route("demo.public", instances=5)
async def public(body: Any) -> Any:
    return body


@registry.route("demo.private", instances=3, private=True)
async def private(body: Any) -> Any:
    return body


app = create_app(personality="resources", config_dir=Path(__file__).parent, functions=registry)
