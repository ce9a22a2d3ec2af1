"""PostOffice: send, request, broadcast, request_all, exists, search: in process, mesh or HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from meshkit.core._address import Address
from meshkit.core._context import INLINE, NO_DEADLINE, current_event
from meshkit.core._envelope import EventEnvelope, request_event
from meshkit.core._errors import AppError
from meshkit.core._eventstream import EventStream, StreamData
from meshkit.core._platform import Platform, current_platform
from meshkit.core._seams import EventClient

T = TypeVar("T")


class PostOffice:
    """The caller's API. Create one where you need it: ``po = PostOffice()``.

    Inside a function, the PostOffice sends from the platform running it (several apps may share a process,
    as in meshkit.testing) and carries the running event's trace id and path to the events it sends.
    """

    __slots__ = ("_deadline", "_platform", "_route", "_trace_id", "_trace_path")

    def __init__(
        self, platform: Platform | None = None, *, trace_id: str | None = None, trace_path: str | None = None
    ) -> None:
        context = current_event.get()
        if platform is None:
            platform = context.platform if context is not None and context.platform is not None else None
        self._platform = platform if platform is not None else current_platform()
        self._route = context.route if context else None  # events sent from a function say so in `from`
        self._trace_id = trace_id if trace_id is not None else (context.trace_id if context else None)
        self._trace_path = trace_path if trace_path is not None else (context.trace_path if context else None)
        # the running event's deadline, read here too for a plain `def` handler (its thread has the context)
        self._deadline = context.deadline if context is not None else None

    @property
    def platform(self) -> Platform:
        return self._platform

    def time_left(self, timeout: float) -> float:
        """`timeout`, or less: what is left of the running event's deadline (0 or less: it passed)."""
        # a handler's step driven by its pool: that event's deadline; else (a plain `def` handler's thread)
        # the one read when this PostOffice was made
        deadline = INLINE.deadline
        if deadline is None:
            deadline = self._deadline
            if deadline is None:
                return timeout
        elif deadline == NO_DEADLINE:
            return timeout
        left = deadline - time.perf_counter()
        return left if left < timeout else timeout

    def _event(self, to: str | EventEnvelope, body: Any, headers: dict[str, str] | None) -> EventEnvelope:
        if isinstance(to, EventEnvelope):
            event = to
            if body is not None:
                event.body = body
            if headers:
                event.headers.update(headers)
        else:
            event = request_event(to, body, dict(headers) if headers else {})
        if event.sender is None:
            event.sender = self._route
        if event.trace_id is None and self._trace_id is not None:
            event.trace_id = self._trace_id
            event.trace_path = self._trace_path
        return event

    def _event_client(self) -> EventClient:
        client = self._platform.event_client
        if client is None:
            raise RuntimeError(
                "Event over HTTP is not plugged into this platform: build the app with create_app or "
                "install (meshkit.http), or use meshkit.testing"
            )
        return client

    # -- drop and forget -----------------------------------------------------------------------------------
    async def send(
        self, to: str | EventEnvelope, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        """Deliver an event without waiting for a reply. Raises AppError(404) for an unknown route."""
        self._platform.dispatch(self._event(to, body, headers))

    async def broadcast(self, to: str, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Deliver a copy to every app instance that serves `to`, this one included."""
        platform = self._platform
        origins = platform.route_origins(to)
        if not origins:
            raise AppError(404, f"Route {to} not found")
        for origin in origins:
            event = self._event(Address.of(to, origin) if origin != platform.origin else to, body, headers)
            platform.dispatch(event)

    # -- RPC -----------------------------------------------------------------------------------------------
    async def request(
        self,
        to: str | EventEnvelope,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        endpoint: str | None = None,
        timeout_as_reply: bool = False,
        idempotent: bool | None = None,
    ) -> EventEnvelope:
        """Send an event and await its reply.

        A handler's error comes back as a reply with its status. No reply within `timeout` seconds raises
        TimeoutError, or returns a 408 envelope when `timeout_as_reply` is set. Inside a function, the
        timeout is at most what is left of the running event's deadline. With `endpoint`
        ("http://host:port/api/event") the event travels over HTTP instead of the bus. `idempotent`: whether
        this request may be sent again to another instance if its instance fails (None: as the route's owner
        declared it with `@route(..., idempotent=...)`).
        """
        event = self._event(to, body, headers)
        if INLINE.deadline is not None or self._deadline is not None:  # inside a function
            timeout = self.time_left(timeout)
        if timeout <= 0:
            message = f"Route {event.to}: the caller's deadline passed before the request was sent"
            if timeout_as_reply:
                return EventEnvelope(status=408, body=message, cid=event.cid, sender=event.to)
            raise TimeoutError(message)
        if endpoint is not None:
            if event.deadline is None:
                event.deadline = time.perf_counter() + timeout
            client = self._event_client()
            return await client.request(endpoint, event, timeout, timeout_as_reply)
        try:
            return await self._platform.call(event, timeout, idempotent=idempotent)
        except TimeoutError as exc:
            if timeout_as_reply:
                return EventEnvelope(status=408, body=str(exc), cid=event.cid, sender=event.to)
            raise

    def stream(
        self,
        to: str | EventEnvelope,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        endpoint: str | None = None,
        idempotent: bool | None = None,
    ) -> EventStream:
        """Call a streaming function and read its segments as they come::

            async for segment in po.stream("llm.tokens", {"text": prompt}):
                print(segment.body)        # data segments, then one EOF or EXCEPTION segment

        The same call in process, across the mesh and, with `endpoint`, over Event over HTTP. `timeout` is
        the idle allowance between segments (inside a function, at most what is left of its deadline for the
        first): none within it ends the stream in-band with a 408 EXCEPTION. A producer's error ends it
        in-band with its status; so does an unknown route, as the stream's one envelope. Stopping early
        (`break`, `aclose()`, `async with`, cancellation) stops the producer. A function that does not
        stream yields its one reply. `stream.data()` gives the data alone, raising AppError on failure.
        `idempotent`: whether the stream may go to another instance if its instance is lost before its first
        segment (None: as the route's owner declared it; docs/protocol/streams.md#failover).
        """
        event = self._event(to, body, headers)
        if INLINE.deadline is not None or self._deadline is not None:  # inside a function
            timeout = self.time_left(timeout)
        timeout = max(timeout, 0.001)
        if endpoint is not None:
            client = self._event_client()
            return client.stream(endpoint, event, timeout)
        return self._platform.stream(event, timeout, idempotent=idempotent)

    async def request_all(
        self, events: Sequence[EventEnvelope | str], *, timeout: float = 10.0
    ) -> list[EventEnvelope]:
        """Fork-n-join: send every event at once and return the replies that arrived within `timeout`.

        The result keeps the order of `events`; late ones are simply missing, never an exception.
        """
        replies = await asyncio.gather(
            *(self.request(e, timeout=timeout) for e in events), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, TimeoutError):
                raise reply
        return [r for r in replies if isinstance(r, EventEnvelope)]

    # -- discovery -----------------------------------------------------------------------------------------
    def exists(self, *routes: str) -> bool:
        """True when every route is served here or anywhere in the mesh."""
        return bool(routes) and all(self._platform.route_exists(r) for r in routes)

    def search(self, route: str) -> list[str]:
        """The origins of the app instances serving `route`."""
        return self._platform.route_origins(route)

    # -- the bridge for plain `def` handlers -----------------------------------------------------------------
    @property
    def sync(self) -> SyncPostOffice:
        return SyncPostOffice(self)


class SyncPostOffice:
    """Blocking calls for code in a worker thread (a plain `def` handler): ``po.sync.request(...)``."""

    __slots__ = ("_po",)

    def __init__(self, po: PostOffice) -> None:
        self._po = po

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._po.platform.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError(
                "PostOffice.sync blocks: use 'await po.request(...)' (or 'po.stream(...)') on the event loop"
            )
        return loop

    def _run(self, loop: asyncio.AbstractEventLoop, call: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(call, loop).result(timeout + 1.0)

    def send(self, to: str | EventEnvelope, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self._run(self._loop(), self._po.send(to, body, headers), 10.0)

    def broadcast(self, to: str, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self._run(self._loop(), self._po.broadcast(to, body, headers), 10.0)

    def request(
        self,
        to: str | EventEnvelope,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        endpoint: str | None = None,
        timeout_as_reply: bool = False,
        idempotent: bool | None = None,
    ) -> EventEnvelope:
        loop = self._loop()  # first: it refuses to block the event loop, before a coroutine exists
        call = self._po.request(
            to,
            body,
            headers,
            timeout=timeout,
            endpoint=endpoint,
            timeout_as_reply=timeout_as_reply,
            idempotent=idempotent,
        )
        return self._run(loop, call, timeout)

    def request_all(
        self, events: Sequence[EventEnvelope | str], *, timeout: float = 10.0
    ) -> list[EventEnvelope]:
        return self._run(self._loop(), self._po.request_all(events, timeout=timeout), timeout)

    def stream(
        self,
        to: str | EventEnvelope,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        endpoint: str | None = None,
        idempotent: bool | None = None,
    ) -> SyncEventStream:
        """`PostOffice.stream` for a worker thread: ``for segment in po.sync.stream(...)``, or
        ``with po.sync.stream(...) as segments``; `.data()` gives the data alone, `close()` stops it."""
        loop = self._loop()

        async def open_stream() -> EventStream:
            return self._po.stream(
                to, body, headers, timeout=timeout, endpoint=endpoint, idempotent=idempotent
            )

        return SyncEventStream(loop, self._run(loop, open_stream(), timeout), timeout)


_END = object()  # the async iterator ended


class SyncEventStream:
    """An EventStream read from a worker thread: each segment is awaited on the platform's loop."""

    __slots__ = ("_idle", "_loop", "_stream")

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: EventStream, idle: float) -> None:
        self._loop, self._stream, self._idle = loop, stream, idle

    def __iter__(self) -> Iterator[EventEnvelope]:
        return _blocking(self._loop, self._stream, self._idle)

    def data(self) -> Iterator[Any]:
        """The data of the segments, in order; AppError(status, message) if the stream fails."""
        return _blocking(self._loop, StreamData(self._stream), self._idle)

    def close(self) -> None:
        """Stop reading: the producer stops too."""
        asyncio.run_coroutine_threadsafe(self._stream.aclose(), self._loop).result(self._idle + 1.0)

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _blocking(loop: asyncio.AbstractEventLoop, source: AsyncIterator[T], idle: float) -> Iterator[T]:
    async def step() -> Any:
        try:
            return await anext(source)
        except StopAsyncIteration:
            return _END

    while True:
        # the stream itself ends in-band (408) past its idle allowance: the margin is for a busy loop
        item = asyncio.run_coroutine_threadsafe(step(), loop).result(idle + 1.0)
        if item is _END:
            return
        yield item
