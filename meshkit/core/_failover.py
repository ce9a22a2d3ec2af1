"""Failover: a request whose instance left, died, could not be reached, refused for overload or stalled is
sent again to another instance, when it is safe to retry, within its deadline and the retry budget."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from meshkit.core._envelope import EventEnvelope
from meshkit.core._errors import AppError
from meshkit.core._replies import PendingReplies
from meshkit.core._retry import RetryBudget, RetryPolicy
from meshkit.core._seams import RemoteRouter

if TYPE_CHECKING:
    from meshkit.core._streamhub import Unanswered

log = logging.getLogger("meshkit.platform")

# what a reply the platform makes up for a remote request says in `exception`
PEER_LOST = "PeerLost"  # its instance left or died before replying
STALLED = "Stalled"  # its instance was taken out of rotation, hung or failing, with the request unanswered


class Bus(Protocol):
    remote: RemoteRouter | None
    inbox: str


class Failover:
    """The retries of one platform's requests: `replies` are the platform's own, so that a retry waits for
    its reply (and its deadline) as the request did."""

    def __init__(self, replies: PendingReplies, policy: RetryPolicy, budget: RetryBudget) -> None:
        self._replies = replies
        self.policy = policy
        self.budget = budget
        self.retries = 0  # requests sent again to another instance

    async def settle(
        self,
        bus: Bus,
        event: EventEnvelope,
        cid: str,
        target: str,
        reply: EventEnvelope,
        idempotent: bool | None,
        sent_at: float,
    ) -> EventEnvelope:
        """The reply of a request to another app, told to its outlier detection; when the instance left,
        died, could not be reached, refused for overload or stalled, the request goes again to another
        instance, if it is safe to retry, within its deadline, the retry attempts and the retry budget."""
        remote = bus.remote
        loop = asyncio.get_running_loop()
        failed: set[str] = set()
        retries = 0
        while True:
            made_up = reply.exception == PEER_LOST or reply.exception == STALLED
            if remote is not None and not made_up:
                remote.outcome(target, event.to or "", reply.status, time.perf_counter() - sent_at)
            if reply.status != 503:
                return reply
            stalled = reply.exception == STALLED
            next_target = None
            if (
                remote is not None
                and retries < self.policy.attempts
                and self._retryable(remote, event, idempotent)
            ):
                failed.add(target)
                next_target = await self._next_target(remote, event, cid, failed, retries)
            if next_target is not None and not self.budget.withdraw(loop.time()):
                log.debug("Retry of %s to %s refused by the retry budget", cid, event.to)
                next_target = None
            if next_target is None:
                if stalled:  # not sent again: the instance may still answer it, within the deadline
                    reply = await self._rearm(loop, cid, event)
                    continue
                return reply
            retries += 1
            self.retries += 1
            log.debug("Request %s to %s sent again to %s: %s", cid, event.to, next_target, reply.body)
            future = self._replies.again(cid)
            try:
                remote.send(next_target, event)  # type: ignore[union-attr]
            except AppError as exc:
                self._replies.futures.pop(cid, None)
                reply = EventEnvelope(bus.inbox, exc.message, status=503, cid=cid, exception=PEER_LOST)
                target = next_target
                continue
            target, sent_at = next_target, time.perf_counter()
            reply = await future

    def resend(
        self,
        bus: Bus,
        tried: Unanswered,
        *,
        alive: bool = False,
    ) -> str | None:
        """Send a stream request whose instance left, died, was unreachable or refused before its first
        segment to an instance not in `tried.failed`, by a request's rules (safe to retry, attempts, the
        retry budget, its deadline); the instance it went to, or None. `alive`: the way to the last one
        broke, not the instance: with no other, it may take the stream again the other way (the broker)."""
        request, failed = tried.request, tried.failed
        remote = bus.remote
        if (
            remote is None
            or tried.retries >= self.policy.attempts
            or not self._retryable(remote, request, tried.idempotent)
        ):
            return None
        left = request.time_left()
        if left is not None and left <= 0:
            return None
        target = remote.pick(request.to or "", failed)
        if target is None and alive:
            target = remote.pick(request.to or "")
        if target is None or not self.budget.withdraw(asyncio.get_running_loop().time()):
            return None
        try:
            remote.send(target, request)
        except AppError as exc:
            log.debug("Stream request %s to %s not sent again: %s", request.cid, target, exc.message)
            return None
        self.retries += 1
        return target

    def _retryable(self, remote: RemoteRouter, event: EventEnvelope, idempotent: bool | None) -> bool:
        route = event.to or ""
        if "@" in route:  # addressed to one instance: there is no other to send it to
            return False
        if idempotent is not None:
            return idempotent
        return remote.retryable(route)

    async def _next_target(
        self, remote: RemoteRouter, event: EventEnvelope, cid: str, failed: set[str], retries: int
    ) -> str | None:
        """Another instance for a retry; with none, one after a backoff (a newcomer, or a failed one
        again), while the deadline allows."""
        route = event.to or ""
        target = remote.pick(route, frozenset(failed))
        if target is not None:
            return target
        left = event.time_left()
        delay = self.policy.delay(retries)
        if left is None or left <= delay + 0.002:
            return None
        await asyncio.sleep(delay)
        if not self._replies.within_deadline(cid):  # the deadline passed meanwhile
            raise TimeoutError(f"Route {route} timeout while waiting to send it again")
        return remote.pick(route)

    async def _rearm(self, loop: asyncio.AbstractEventLoop, cid: str, event: EventEnvelope) -> EventEnvelope:
        """Wait again for the reply of a request that is still out there."""
        if not self._replies.within_deadline(cid):
            raise TimeoutError(f"Route {event.to} timeout")
        return await self._replies.again(cid)
