"""A platform's event streams in progress: those it reads and those its functions produce, by cid.

Segments, credit and cancel all travel as events to an inbox (docs/protocol/streams.md); the platform hands
what reaches its inbox and is not a reply to a pending request to `arrive`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from meshkit.core._address import Address
from meshkit.core._envelope import EventEnvelope, new_event_id
from meshkit.core._errors import AppError
from meshkit.core._eventstream import Arrivals, LocalStream
from meshkit.core._markers import (
    CANCEL,
    CREDIT,
    X_STREAM_CONTROL,
    X_STREAM_IDLE,
    X_STREAM_WINDOW,
    X_STREAM_WINDOW_BYTES,
)
from meshkit.core._outlet import DEFAULT_WINDOW, DEFAULT_WINDOW_BYTES, Outlet

log = logging.getLogger("meshkit.streams")

#: (what was tried, its last instance among those it failed at; whether that one lives on) -> the instance
#: it went to now, or None: sent again by the rules of a request's retry (the platform's Failover)
Resend = Callable[["Unanswered", bool], str | None]


class Unanswered(NamedTuple):
    """A stream request sent to another app that has had nothing back yet: it may still go elsewhere."""

    request: EventEnvelope
    failed: frozenset[str]
    retries: int
    idempotent: bool | None  # the caller's say (None: the route's declaration)


class StreamHub:
    """The streams of one platform: `readers` it consumes, `outlets` its functions produce."""

    __slots__ = (
        "_resend",
        "_targets",
        "inbox",
        "outlets",
        "readers",
        "send",
        "unanswered",
        "window",
        "window_bytes",
    )

    def __init__(
        self,
        inbox: str,
        dispatch: Callable[[EventEnvelope], None],
        targets: dict[str, str],
        *,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        resend: Resend | None = None,
    ) -> None:
        self.inbox = inbox
        self.send = dispatch  # segments and controls: raises AppError when the other side cannot be reached
        # what a stream this platform reads may have on its way before its producer waits for credit
        self.window, self.window_bytes = window, window_bytes
        self.readers: dict[str, Arrivals] = {}
        self.outlets: dict[str, Outlet] = {}
        self._targets = targets  # the platform's: cid -> the remote origin a request of ours went to
        self._resend = resend
        self.unanswered: dict[str, Unanswered] = {}  # by cid, until the first segment (or failure) arrives

    # -- reading -------------------------------------------------------------------------------------------
    def open(
        self,
        event: EventEnvelope,
        idle: float,
        submit: Callable[[EventEnvelope], None],
        *,
        idempotent: bool | None = None,
    ) -> LocalStream:
        """Send a stream request and return the stream its segments arrive on; a refusal (an unknown route,
        a full queue) arrives in-band as its one reply. `idempotent`: whether it may go to another instance
        before its first segment (None: as its route is declared)."""
        caller_cid = event.cid
        cid = event.cid = new_event_id()
        event.reply_to = self.inbox
        event.headers[X_STREAM_WINDOW] = str(self.window)
        event.headers[X_STREAM_WINDOW_BYTES] = str(self.window_bytes)
        event.headers[X_STREAM_IDLE] = str(max(1, int(idle * 1000)))
        deadline = time.perf_counter() + idle  # for its first segment: a queued request expires unrun
        if event.deadline is None or deadline < event.deadline:
            event.deadline = deadline
        stream = self.reader(cid, event.to, idle, caller_cid)
        try:
            submit(event)
        except AppError as exc:
            refusal = EventEnvelope(status=exc.status, body=exc.message, cid=cid, sender=event.to)
            self.readers[cid].push(refusal)
        else:
            if cid in self._targets:  # it went to another app: until it answers, it may go elsewhere
                self.unanswered[cid] = Unanswered(event, frozenset(), 0, idempotent)
        return stream

    def reader(self, cid: str, route: str | None, idle: float, caller_cid: str | None) -> LocalStream:
        def control(kind: str, segments: int) -> None:
            self._control(arrivals.cid, kind, segments)  # its cid now: failover gives it a new one

        arrivals = self.readers[cid] = Arrivals(cid, route, self.window, self.window_bytes, control)
        return LocalStream(arrivals, idle=idle, control=control, forget=self._forget, caller_cid=caller_cid)

    def _control(self, cid: str, kind: str, segments: int) -> None:
        origin = self._targets.get(cid)
        to = Address.inbox(origin) if origin is not None else self.inbox
        event = EventEnvelope(to, segments, {X_STREAM_CONTROL: kind}, cid=cid, sender=self.inbox)
        try:
            self.send(event)
        except Exception as exc:  # the producer's app is gone: its stream ends there without us
            log.debug("Stream %s: %s not delivered: %s", cid, kind, exc)
        if kind == CANCEL:
            self._targets.pop(cid, None)

    def _forget(self, cid: str) -> None:
        self.readers.pop(cid, None)
        self.unanswered.pop(cid, None)
        if cid in self._targets and cid not in self.outlets:
            self._targets.pop(cid, None)

    # -- producing -----------------------------------------------------------------------------------------
    def sender(self, request: EventEnvelope) -> Callable[[EventEnvelope], None]:
        """How an outlet for `request` sends its segments: straight to a reader on this platform, else
        through the platform's dispatch (across the mesh)."""
        if request.reply_to == self.inbox and request.cid is not None:
            reader = self.readers.get(request.cid)
            if reader is not None:
                return reader.push
        return self.send

    def add_outlet(self, outlet: Outlet) -> None:
        if outlet.cid is not None:
            self.outlets[outlet.cid] = outlet

    def remove_outlet(self, outlet: Outlet) -> None:
        if outlet.cid is not None and self.outlets.get(outlet.cid) is outlet:
            del self.outlets[outlet.cid]

    # -- arrivals ------------------------------------------------------------------------------------------
    def arrive(self, event: EventEnvelope) -> bool:
        """A segment for a stream we read, or a control for one we produce: True when it was one."""
        cid = event.cid
        if cid is None:
            return False
        control = event.headers.get(X_STREAM_CONTROL)
        if control is None:
            reader = self.readers.get(cid)
            if reader is None:
                return False
            unanswered = self.unanswered.pop(cid, None)
            # refused before its first segment (overload, or its instance could not be reached): elsewhere
            if unanswered is not None and event.status == 503:
                origin = self._targets.get(cid)
                if origin is not None and self._again(cid, unanswered, origin):
                    return True
            reader.push(event)
            return True
        outlet = self.outlets.get(cid)
        if outlet is None or event.sender != outlet.consumer:
            log.debug("Stream control %s for %s dropped: no such stream here", control, cid)
            return True
        if control == CREDIT:
            segments = event.body
            if isinstance(segments, int) and not isinstance(segments, bool) and segments > 0:
                outlet.grant(segments)
        elif control == CANCEL:
            outlet.cancel("the caller stopped reading")
        else:
            log.warning("Stream control %r for %s dropped: unknown", control, cid)
        return True

    def peer_gone(self, origin: str, message: str, exception: str, *, alive: bool = False) -> int:
        """`origin` left the mesh (or, `alive`, the way to it broke): the streams it produced for us fail,
        those we produce for it stop. One that had nothing from it yet may go elsewhere (`_again`)."""
        ended = 0
        for cid, reader in list(self.readers.items()):
            if self._targets.get(cid) == origin:
                unanswered = self.unanswered.pop(cid, None)
                if unanswered is not None and self._again(cid, unanswered, origin, alive):
                    continue  # it had sent nothing yet: another instance takes the stream
                reader.fail(503, message, exception)
                ended += 1
        consumer = Address.inbox(origin)
        for outlet in list(self.outlets.values()):
            if outlet.consumer == consumer:
                outlet.cancel(f"the caller {origin} left")
                ended += 1
        return ended

    def _again(self, cid: str, unanswered: Unanswered, origin: str, alive: bool = False) -> bool:
        """Send a stream request that `origin` never answered to another instance, if it is safe to retry
        (a request's rules: docs/protocol/streams.md#failover); True when it went."""
        reader = self.readers.get(cid)
        if self._resend is None or reader is None:
            return False
        tried = unanswered._replace(failed=unanswered.failed | {origin})
        request = tried.request
        # a cid of its own: the first producer may live on (a lost link, a false death) and its segments,
        # under the old cid, must not mix with the new one's
        fresh = request.cid = new_event_id()
        self._targets[fresh] = origin  # a retry, not a first attempt: it earns no retry budget (note_target)
        target = self._resend(tried, alive)
        if target is None:
            self._targets.pop(fresh, None)
            request.cid = cid
            return False
        log.debug(
            "Stream %s to %s sent again to %s as %s: %s gave nothing", cid, request.to, target, fresh, origin
        )
        self._control(cid, CANCEL, 0)  # best effort, to the first producer's app
        del self.readers[cid]
        reader.cid = fresh
        self.readers[fresh] = reader
        self.unanswered[fresh] = tried._replace(retries=tried.retries + 1)
        return True

    def stop(self, message: str) -> None:
        """The platform stops: the streams it reads end in-band (its outlets end with their pools)."""
        self.unanswered.clear()
        for reader in list(self.readers.values()):
            reader.fail(503, message)
