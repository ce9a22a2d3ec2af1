"""Log lines in the Mercury shape: time, level, logger, message; configured once per process.

``log.format=json`` writes one JSON object per line instead: ``time, level, logger, message, origin`` and,
while a function runs (or a traced HTTP request), ``route``, ``trace_id`` and ``trace_path``; a trace record
(logger ``meshkit.trace``) comes as a ``trace`` object; an exception as ``exception`` (the traceback text).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any

from meshkit.config import AppConfig, ConfigError
from meshkit.core import current_event

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
FORMATS = ("text", "json")

_origin: str | None = None


def set_log_origin(origin: str | None) -> None:
    """The app instance's origin, written on every JSON log line (the last platform installed wins)."""
    global _origin
    _origin = origin


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the origin and the running function's route and trace."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
            "level": record.levelname,
            "logger": record.name,
        }
        trace = getattr(record, "trace", None)
        data["message"] = "trace" if isinstance(trace, dict) else record.getMessage()
        if _origin is not None:
            data["origin"] = _origin
        context = current_event.get()
        if isinstance(trace, dict):
            data["route"] = trace.get("route")
            data["trace_id"] = trace.get("trace_id")
            data["trace_path"] = trace.get("trace_path")
            data["trace"] = trace
        elif context is not None:
            if context.route:
                data["route"] = context.route
            if context.trace_id is not None:
                data["trace_id"] = context.trace_id
                data["trace_path"] = context.trace_path
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class _MeshkitHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler setup_logging installs (recognised, so that a second app updates it, never doubles it)."""


def make_formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(FORMAT, DATE_FORMAT)


def log_format(config: AppConfig) -> str:
    kind = (config.get("log.format", "text") or "text").strip().lower()
    if kind not in FORMATS:
        raise ConfigError(f"log.format={kind!r} ({config.source_of('log.format')}): expected text or json")
    return kind


def wants_route_in_logs(config: AppConfig) -> bool:
    """JSON logs show the running function's route: the bus then sets it for untraced inline runs too."""
    return (config.get("log.format", "text") or "text").strip().lower() == "json"


def setup_logging(config: AppConfig) -> None:
    """Give the `meshkit` loggers a handler unless the application configured logging itself."""
    level_name = (config.get("log.level", "INFO") or "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    kind = log_format(config)
    for name in ("meshkit", "presence_server", "example_services"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        ours = [h for h in logger.handlers if isinstance(h, _MeshkitHandler)]
        for handler in ours:
            handler.setFormatter(make_formatter(kind))
        if not logger.handlers and not logging.getLogger().handlers:
            mine = _MeshkitHandler()
            mine.setFormatter(make_formatter(kind))
            logger.addHandler(mine)
            logger.propagate = False
    if kind == "json":  # uvicorn's own lines (started, access log) in the same shape
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            for other in logging.getLogger(name).handlers:
                other.setFormatter(JsonFormatter())
