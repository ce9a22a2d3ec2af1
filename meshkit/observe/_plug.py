"""Observability plugged into a platform's hooks: its tracer, its log context, the origin log lines name."""

from __future__ import annotations

from meshkit.core import Platform
from meshkit.observe._logging import set_log_origin, wants_route_in_logs
from meshkit.observe._tracing import Tracer


def instrument(platform: Platform) -> Tracer:
    """Trace the platform's executions as its configuration says, and name it in log lines; before `start`.

    Returns the tracer, which the HTTP edge (`install_tracing`) shares.
    """
    tracer = Tracer(platform)
    if tracer.active:
        platform.tracer = tracer
    platform.log_context = wants_route_in_logs(platform.config)
    set_log_origin(platform.origin)
    return tracer
