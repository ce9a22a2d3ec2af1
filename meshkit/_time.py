"""Time as the actuators show it."""

from __future__ import annotations


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
