"""Health checks: each dependency is a function that answers `type=info` and `type=health`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from meshkit.core import AppError, EventEnvelope, Platform, PostOffice

log = logging.getLogger("meshkit.health")

CHECK_TIMEOUT = 10.0


class HealthMonitor:
    """Runs the configured health checks and remembers whether the last one passed (for /livenessprobe)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        config = platform.config
        self.mandatory = config.get_list("mandatory.health.dependencies")
        self.optional = [
            r for r in config.get_list("optional.health.dependencies") if r not in self.mandatory
        ]
        self.last_ok = True

    async def check(self) -> tuple[bool, dict[str, Any]]:
        if self.platform.draining:  # stopping: no new traffic, please (liveness is not affected)
            return False, {
                "status": "DOWN",
                "draining": True,
                "origin": self.platform.origin,
                "name": self.platform.name,
            }
        deps = [(route, True) for route in self.mandatory] + [(route, False) for route in self.optional]
        upstream = await asyncio.gather(*(self._check_one(route, required) for route, required in deps))
        healthy = all(entry["status_code"] == 200 for entry in upstream if entry["required"])
        if healthy != self.last_ok:
            log.info("Health is now %s", "UP" if healthy else "DOWN")
        self.last_ok = healthy
        return healthy, {
            "upstream": upstream,
            "status": "UP" if healthy else "DOWN",
            "origin": self.platform.origin,
            "name": self.platform.name,
        }

    async def _check_one(self, route: str, required: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"route": route, "required": required}
        po = PostOffice(self.platform)
        try:
            info = await po.request(route, headers={"type": "info"}, timeout=CHECK_TIMEOUT)
            if info.status == 200 and isinstance(info.body, dict):
                entry.update({k: v for k, v in info.body.items() if k in ("service", "href", "topics")})
            health = await po.request(route, headers={"type": "health"}, timeout=CHECK_TIMEOUT)
        except AppError as exc:
            return {**entry, "status_code": exc.status, "message": exc.message}
        except TimeoutError as exc:
            return {**entry, "status_code": 408, "message": str(exc)}
        entry["status_code"] = health.status
        entry["message"] = _message(health)
        return entry


def _message(reply: EventEnvelope) -> Any:
    return reply.body if reply.body is not None else ("OK" if reply.status == 200 else "")
