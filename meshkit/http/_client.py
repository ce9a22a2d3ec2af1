"""Event over HTTP, the caller's side: one aiohttp session per platform (measured ~10x httpx's throughput)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from meshkit.core import (
    NOT_PROVEN,
    AppError,
    CodecError,
    EventEnvelope,
    EventStream,
    Platform,
    decode,
    encode,
)
from meshkit.http._reading import HttpStream
from meshkit.observe import trace_headers
from meshkit.security import CALLER_HEADER, ClientTLS, MeshKeys

if TYPE_CHECKING:
    import aiohttp

    from meshkit.mesh import CallerProofs

log = logging.getLogger("meshkit.http")


class EventOverHttp:
    """`PostOffice.request(..., endpoint=...)` for one platform (the core's EventClient)."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._session: aiohttp.ClientSession | None = None
        self._tls = ClientTLS(platform.config)  # https:// endpoints: tls.ca, tls.certfile (checked now)
        self._tls_warned: set[str] = set()  # endpoints whose TLS failure was logged as a warning
        self._prove: set[tuple[str, str | None]] = set()  # (endpoint, route) that asked who is calling

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp  # on first use: an app that never calls an endpoint never loads the client (~8 MB)

        session = self._session
        if session is None or session.closed:
            # the mesh key is read from the configuration once, and sent with every request of the session
            # without tls.*, aiohttp's own default: the system's CAs
            ssl = self._tls.context if self._tls.configured else True
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=128, ssl=ssl),
                headers=MeshKeys(self._platform.config).headers(),
            )
            self._platform.on_shutdown(self.close)
        return session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self, endpoint: str, event: EventEnvelope, timeout: float, timeout_as_reply: bool
    ) -> EventEnvelope:
        """POST the event to a peer's /api/event and return its reply envelope.

        Transport failures raise like the in-process bus does: AppError with the peer's status (400, 403,
        404, 413, 503) or TimeoutError (408), unless `timeout_as_reply` asks for a 408 envelope instead.
        """
        if event.sender is None:
            event.sender = self._platform.name
        headers = {"content-type": "application/octet-stream", "x-ttl": str(max(1000, int(timeout * 1000)))}
        headers.update(trace_headers(event))  # X-Trace-Id, traceparent; the envelope carries the trace too
        session = self._open()
        from aiohttp import ClientError, ClientTimeout  # loaded by _open

        posted, proofs, started = encode(event), self._proofs(), time.monotonic()
        if proofs is not None and (
            (endpoint, event.to) in self._prove or proofs.restricted_anywhere(event.to)
        ):
            headers[CALLER_HEADER] = proofs.header(posted)
        try:
            # aiohttp's own timer covers the whole exchange, the body's read included: no second one
            limit = ClientTimeout(total=timeout)
            async with session.post(endpoint, data=posted, headers=headers, timeout=limit) as response:
                status, data = response.status, await response.read()
            if (
                status == 403
                and proofs is not None
                and CALLER_HEADER not in headers
                and NOT_PROVEN.encode() in data
            ):
                # the route takes only some apps: say who we are, from now on (it never ran: safe to resend)
                self._prove.add((endpoint, event.to))
                headers[CALLER_HEADER] = proofs.header(posted)
                left = ClientTimeout(total=max(0.001, timeout - (time.monotonic() - started)))
                async with session.post(endpoint, data=posted, headers=headers, timeout=left) as response:
                    status, data = response.status, await response.read()
        except TimeoutError:
            return _timed_out(
                event, f"Route {event.to} at {endpoint} timeout for {timeout:g} s", timeout_as_reply
            )
        except ClientError as exc:
            raise AppError(503, f"Unable to reach {endpoint}: {self._why(endpoint, exc)}") from exc
        try:
            reply = decode(data)
        except CodecError as exc:
            message = f"{endpoint} answered HTTP {status} without an event envelope: {exc}"
            raise AppError(502, message) from exc
        if status == 408 or (reply.status == 408 and status != 200):
            return _timed_out(event, reply.error_message(), timeout_as_reply)
        if status != 200:
            raise AppError(status, reply.error_message())
        return reply

    def _proofs(self) -> CallerProofs | None:
        proofs: CallerProofs | None = getattr(self._platform.remote, "proofs", None)  # the mesh's, if any
        return proofs

    def _why(self, endpoint: str, exc: Exception) -> str:
        """The client error in words; a TLS failure is logged too (a warning once an endpoint, then info)."""
        reason = self._tls.describe_failure(exc, endpoint)
        if reason is None:
            return str(exc)
        level = logging.INFO if endpoint in self._tls_warned else logging.WARNING
        self._tls_warned.add(endpoint)
        log.log(level, "Event over HTTP to %s: TLS handshake failed: %s", endpoint, reason)
        return f"TLS handshake failed: {reason}"

    def stream(self, endpoint: str, event: EventEnvelope, idle: float) -> EventStream:
        """Read a streaming function at a peer's /api/event (Server-Sent Events); the POST goes out on the
        first read, and every failure arrives in-band as the stream's last segment."""
        if event.sender is None:
            event.sender = self._platform.name
        limit = 2 * self._platform.config.get_int("max.event.size", 16 * 1024 * 1024)  # base64 and lines
        return HttpStream(self._open(), endpoint, event, idle, limit)


def _timed_out(event: EventEnvelope, message: str, as_reply: bool) -> EventEnvelope:
    if as_reply:
        return EventEnvelope(status=408, body=message, cid=event.cid, sender=event.to)
    raise TimeoutError(message)
