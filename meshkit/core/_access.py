"""Who may call a route that takes calls only from some apps (docs/protocol/access.md)."""

from __future__ import annotations

import logging

from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError

log = logging.getLogger("meshkit.platform")
NOT_PROVEN = "the caller is not proven"  # in the 403 of a route that takes only some apps (access.md)


def check_caller(app: str, route: str, allow: frozenset[str], event: EventEnvelope) -> None:
    """403 for a caller from outside that `allow` does not name, and a line naming it; `app`'s own instances
    (its name) may always call."""
    caller = event.caller
    if caller in allow or (caller is not None and caller == app):
        return
    allowed = ", ".join(sorted(allow)) or "no app"
    if caller is None:
        who = f"an unproven caller ({event.sender or 'no sender'}, {event.reply_to or 'no reply inbox'})"
        message = f"Route {route} takes calls only from {allowed}, proven: {NOT_PROVEN}"
    else:
        who = f"{caller} ({event.caller_origin})"
        message = f"Route {route} takes calls only from {allowed}, not from {caller}"
    log.warning("Refused a call to %s from %s: it takes calls only from %s", route, who, allowed)
    raise AppError(403, message)
