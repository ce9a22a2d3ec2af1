"""The seams between the core and the layers plugged into it, as protocols the core owns.

The core imports nothing above it: the mesh, observability and Event over HTTP implement these and are
plugged into a Platform (`platform.remote`, `platform.tracer`, `platform.event_client`) by whoever
assembles the app (`meshkit.http.install`, `meshkit.testing`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from meshkit.core._envelope import EventEnvelope
from meshkit.core._eventstream import EventStream

#: routes -> {origin: "name, PERSONALITY"}, and origin -> what is known of that app instance
RoutingView = tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]


class MeshCounters(NamedTuple):
    """Event records through the connector and over direct links, and those handed to the connector not yet
    acknowledged by the broker."""

    sent: int
    received: int
    skipped: int
    pending: int
    ejections: int = 0  # peers taken out of this caller's rotation as outliers
    direct_sent: int = 0  # event records over direct links instead (meshkit.mesh's direct path)
    direct_received: int = 0
    direct_links: int = 0  # direct links open now


class RemoteRouter(Protocol):
    """What the platform asks of the mesh: the distributed routing table and the way to each peer."""

    def pick(self, route: str, avoid: frozenset[str] = frozenset()) -> str | None:
        """One origin serving `route`, balanced across all that do, but not one in `avoid`, and one that is
        draining or ejected as an outlier only when no other serves it; None when nobody does."""

    def retryable(self, route: str) -> bool:
        """Whether the route's owner declared it safe to send twice (`idempotent=True`)."""

    def outcome(self, origin: str, route: str, status: int | None, elapsed: float) -> None:
        """A request of ours to `route` at `origin` was answered with `status` (None: it timed out) after
        `elapsed` seconds: what outlier detection learns from."""

    def origins(self, route: str) -> list[str]:
        """Every origin serving `route`."""

    def send(self, origin: str, event: EventEnvelope) -> None:
        """Put an event on the way to `origin` (raises AppError when it cannot)."""

    def describe(self) -> RoutingView:
        """The peers' routes and the peers, for /info/routes."""

    def contracts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """origin -> route -> the contract its owner published (meshkit.core._contracts), for the catalog."""

    def counters(self) -> MeshCounters:
        """What went through the connector, for /metrics."""


class LocalBus(Protocol):
    """What the mesh asks of the platform: deliver what arrives, resolve replies, fail requests to a peer."""

    origin: str  # this app instance
    inbox: str  # its reply inbox, `@origin`
    name: str  # the app's name: the sender of the refusals the mesh answers for it

    def dispatch(self, event: EventEnvelope, *, external: bool = False) -> None:
        """Deliver an event to a local function or inbox; `external`: it came from outside the process."""

    def deliver_reply(self, reply: EventEnvelope) -> None:
        """Send a reply on its way; one that cannot be delivered is logged, not raised."""

    def resolve_reply(self, reply: EventEnvelope) -> None:
        """Hand a reply to the request of ours waiting for it."""

    def note_target(self, event: EventEnvelope, origin: str) -> None:
        """A request of ours went to `origin`: it fails at once if that app leaves."""

    def fail_requests_to(self, origin: str, message: str, *, stalled: bool = False) -> int:
        """Answer every pending request sent to `origin` with a 503 now; how many there were. `stalled`:
        it was ejected as an outlier, not gone (a request not safe to retry keeps waiting)."""

    def waiting(self, cid: str) -> bool:
        """Whether a request of ours with this cid still awaits its reply."""

    def fail_requests(self, cids: Iterable[str], message: str, *, streams_with: str | None = None) -> int:
        """Answer the pending requests among `cids` with a 503 now (each sent again if safe to retry), and
        end the streams with the app `streams_with`; how many ended."""


class Span(Protocol):
    """One traced execution, from `Tracer.begin` to `end`."""

    def detach(self) -> None:
        """The execution's own code is done with its context (what it spawned keeps a copy)."""

    def end(
        self,
        status: int,
        elapsed: float,
        result: Any,
        *,
        segments: int | None = None,
        size: int | None = None,
    ) -> None:
        """The execution finished: its status, `elapsed` seconds of run time, the reply body; a stream's
        data `segments` and their `size` in bytes."""


class Tracer(Protocol):
    """What observability plugs into the function pools: a span for each execution of a traced event."""

    def begin(self, route: str, event: EventEnvelope, arrived: float) -> Span | None:
        """Start the span of a traced event's execution (None: not this one); `arrived`: perf_counter."""


class EventClient(Protocol):
    """Event over HTTP for `PostOffice.request(..., endpoint=...)` (meshkit.http provides it)."""

    async def request(
        self, endpoint: str, event: EventEnvelope, timeout: float, timeout_as_reply: bool
    ) -> EventEnvelope:
        """POST the event to `endpoint` and return the reply; AppError or TimeoutError like the bus."""

    def stream(self, endpoint: str, event: EventEnvelope, idle: float) -> EventStream:
        """POST the event to `endpoint` asking for a stream (Server-Sent Events); `idle`: the allowance
        between segments. Failures arrive in-band, as the stream's last segment."""
