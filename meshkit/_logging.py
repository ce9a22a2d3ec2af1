"""Log lines in the seed's shape: time, level, logger, message; configured once per process."""

from __future__ import annotations

import logging

from meshkit._config import AppConfig

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(config: AppConfig) -> None:
    """Give the `meshkit` loggers a handler unless the application configured logging itself."""
    level_name = (config.get("log.level", "INFO") or "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    for name in ("meshkit", "presence_server", "example_services"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
            logger.addHandler(handler)
            logger.propagate = False
