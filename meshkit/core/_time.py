"""Time as the wire format and the actuators write it."""

from __future__ import annotations

import datetime as _dt


def iso_utc_ms(value: _dt.datetime) -> str:
    """`2026-11-25T10:00:00.000Z`: UTC, milliseconds; a naive datetime is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    return iso_utc_ms(_dt.datetime.now(_dt.UTC))


def elapsed_text(seconds: float) -> str:
    """`25 minutes 12 seconds`, the way the Mercury actuators say it."""
    remaining = int(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    if remaining or not parts:
        parts.append(f"{remaining} second{'' if remaining == 1 else 's'}")
    return " ".join(parts)
