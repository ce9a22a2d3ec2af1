"""The platform: one per app instance. It owns the functions, the event bus and the reply inboxes."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from meshkit.config import AppConfig
from meshkit.core._access import check_caller
from meshkit.core._address import Address
from meshkit.core._context import PROCESS, current_event
from meshkit.core._drain import DEFAULT_DRAIN_TIMEOUT, Drain
from meshkit.core._envelope import EventEnvelope, new_event_id
from meshkit.core._errors import AppError
from meshkit.core._eventstream import EventStream
from meshkit.core._failover import PEER_LOST, STALLED, Failover
from meshkit.core._functions import FunctionSpec, Handler, default_registry, make_spec
from meshkit.core._outlet import DEFAULT_WINDOW, DEFAULT_WINDOW_BYTES
from meshkit.core._pool import FunctionPool
from meshkit.core._replies import PendingReplies
from meshkit.core._retry import RetryPolicy, budget_from_config
from meshkit.core._seams import EventClient, RemoteRouter, Tracer
from meshkit.core._streamhub import StreamHub

log = logging.getLogger("meshkit.platform")


def new_origin() -> str:
    """An app instance's identity: yyyymmdd + 32 hex characters, new at every start."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%d") + uuid.uuid4().hex


_current: Platform | None = None
_running: dict[str, Platform] = {}  # started and not stopped, by origin


def running_platforms() -> list[Platform]:
    """The platforms started in this process and not stopped (`meshkit run` drains them on SIGTERM)."""
    return list(_running.values())


def current_platform() -> Platform:
    """The platform running the current handler; outside one, the platform started last in the process."""
    context = current_event.get()
    if context is not None and context.platform is not None:
        return context.platform  # type: ignore[no-any-return]
    if _current is None:
        raise RuntimeError(
            "No meshkit platform is running: start one with create_app(...) or Platform.start()"
        )
    return _current


class Platform:
    """Functions, their worker pools, the local event bus and the inboxes of pending requests.

    What is plugged in from above (docs: meshkit/core/_seams.py) is set before `start()`: `remote` (the
    mesh, set by it when it joins), `tracer` (traced executions become spans), `log_context` (every
    execution sets its route in context, for log lines that name it) and `event_client` (Event over HTTP).
    """

    def __init__(
        self,
        config: AppConfig | None = None,
        *,
        name: str | None = None,
        version: str | None = None,
        description: str | None = None,
        personality: str = "APP",
        functions: Iterable[FunctionSpec] | None = None,
    ) -> None:
        self.config = config if config is not None else AppConfig.load()
        self.name = name or self.config.get("application.name", "application") or "application"
        self.version = version or self.config.get("info.app.version", "1.0.0") or "1.0.0"
        self.description = description or self.config.get("info.app.description", "") or ""
        self.personality = personality.upper()
        self.max_queue = self.config.get_int("max.queue", 10_000)
        self.origin = new_origin()
        self.inbox = Address.inbox(self.origin)
        self.started_at: _dt.datetime | None = None
        self.remote: RemoteRouter | None = None
        self.tracer: Tracer | None = None
        self.log_context = False
        self.event_client: EventClient | None = None
        self._declared = list(functions) if functions is not None else list(default_registry)
        self._pools: dict[str, FunctionPool] = {}
        self.replies = PendingReplies()  # the requests of ours that await a reply
        self._loop: asyncio.AbstractEventLoop | None = None
        self._route_listeners: list[RouteListener] = []
        self._replaced: list[FunctionPool] = []  # pools replace() took a route from: they finish their events
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._drain_hooks: list[Callable[[float], Awaitable[None]]] = []
        self._drain: Drain | None = None
        self.draining = False
        self.retry = RetryPolicy.from_config(self.config)
        self.retry_budget = budget_from_config(self.config)
        self._failover = Failover(self.replies, self.retry, self.retry_budget)
        self.late_replies = 0  # replies that came after their caller stopped waiting: dropped
        self.streams = StreamHub(
            self.inbox,
            self.dispatch,
            self.replies.targets,
            window=max(1, self.config.get_int("stream.window", DEFAULT_WINDOW)),
            window_bytes=max(1, self.config.get_int("stream.window.bytes", DEFAULT_WINDOW_BYTES)),
            resend=lambda tried, alive: self._failover.resend(self, tried, alive=alive),
        )

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"platform {self.name} is not started")
        return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    async def start(self) -> None:
        global _current
        self._loop = asyncio.get_running_loop()
        PROCESS.count(+1)
        self.started_at = _dt.datetime.now(_dt.UTC)
        for spec in self._declared:
            if spec.route in self._pools:
                raise ValueError(
                    f"Route '{spec.route}' is declared by both {self._pools[spec.route].spec.qualified_name}"
                    f" and {spec.qualified_name}"
                )
            self._add(spec)
        _current = self
        _running[self.origin] = self
        log.info(
            "%s %s started as %s with %d functions", self.name, self.version, self.origin, len(self._pools)
        )

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` when the platform stops (after the functions, before the inboxes close)."""
        self._shutdown_hooks.append(hook)

    async def stop(self) -> None:
        global _current
        for hook in reversed(self._shutdown_hooks):
            try:
                await hook()
            except Exception:
                log.exception("Shutdown hook %s failed", hook)
        self._shutdown_hooks.clear()
        pools, self._pools = [*self._pools.values(), *self._replaced], {}
        self._replaced.clear()
        await asyncio.gather(*(pool.stop() for pool in pools))
        self.replies.stop(f"{self.name} is shutting down")
        self.streams.stop(f"{self.name} is shutting down")
        if self._loop is not None:
            PROCESS.count(-1)
        if _current is self:
            _current = None
        _running.pop(self.origin, None)
        self._loop = None
        self._drain = None

    @property
    def retries(self) -> int:
        """Requests sent again to another instance."""
        return self._failover.retries

    # -- draining ----------------------------------------------------------------------------------------
    def on_drain(self, hook: Callable[[float], Awaitable[None]]) -> None:
        """Run `hook(deadline)` when the platform drains; `deadline` is on the loop's clock."""
        self._drain_hooks.append(hook)

    def in_flight(self) -> int:
        """Events running or waiting for an instance, in every function."""
        return sum(pool.busy + pool.queue_depth for pool in (*self._pools.values(), *self._replaced))

    async def drain(self, timeout: float | None = None) -> None:
        """Get ready to stop without losing work (SIGTERM): peers stop sending new requests here, and what
        is in flight or already on its way finishes, within `timeout` (default: `drain.timeout`, 20 s).

        `/health` answers DOWN from now on. Calling it again waits for the same drain.
        """
        if self._loop is None:
            return
        if self._drain is None:
            if timeout is None:
                timeout = self.config.get_float("drain.timeout", DEFAULT_DRAIN_TIMEOUT)
            self.draining = True
            self._drain = Drain(self.name, self._drain_hooks, self.in_flight, timeout)
        await self._drain.wait()

    def abandon_drain(self) -> None:
        """Stop waiting for the drain (a second SIGINT): the platform may stop now."""
        if self._drain is not None:
            self._drain.abandon()

    # -- functions ---------------------------------------------------------------------------------------
    def register(
        self,
        route: str | FunctionSpec,
        handler: Handler | None = None,
        *,
        instances: int = 1,
        private: bool = False,
        max_queue: int | None = None,
        idempotent: bool = False,
        allow: Iterable[str] | None = None,
    ) -> FunctionSpec:
        """Add a function at run time (``platform.register("my.route", handler, instances=4)``)."""
        if isinstance(route, FunctionSpec):
            spec = route
        else:
            if handler is None:
                raise TypeError("register(route, handler) needs a handler")
            spec = make_spec(
                route,
                handler,
                instances=instances,
                private=private,
                max_queue=max_queue,
                idempotent=idempotent,
                allow=allow,
            )
        if spec.route in self._pools:
            raise ValueError(f"Route '{spec.route}' is already registered in {self.name}")
        if self._loop is None:
            self._declared.append(spec)
        else:
            self._add(spec)
        return spec

    def _pool_for(self, spec: FunctionSpec) -> FunctionPool:
        return FunctionPool(
            spec,
            self.deliver_reply,
            max_queue=spec.max_queue if spec.max_queue is not None else self.max_queue,
            tracer=self.tracer,
            owner=self,
            log_context=self.log_context,
            streams=self.streams,
        )

    def _add(self, spec: FunctionSpec) -> None:
        self._pools[spec.route] = self._pool_for(spec)
        log.info(
            "%s %s with %d instance%s",
            "Private" if spec.private else "Public",
            spec.route,
            spec.instances,
            "" if spec.instances == 1 else "s",
        )
        for listener in self._route_listeners:
            listener(spec, True)

    async def release(self, route: str) -> None:
        """Remove a function: it stops taking events and its workers end."""
        pool = self._pools.pop(route, None)
        if pool is None:
            raise AppError(404, f"Route {route} not found")
        await pool.stop()
        log.info("%s released", route)
        for listener in self._route_listeners:
            listener(pool.spec, False)

    def replace(self, route: str, handler: Handler) -> FunctionSpec:
        """Run `handler` for `route` from now on (a stub in a test), with the same instances, privacy and
        queue bound; returns the spec it replaced. The route stays advertised throughout, and events the old
        handler already took finish there."""
        old = self._pools.get(route)
        if old is None:
            raise AppError(404, f"Route {route} not found")
        was = old.spec
        spec = make_spec(
            route,
            handler,
            instances=was.instances,
            private=was.private,
            max_queue=was.max_queue,
            idempotent=was.idempotent,
            allow=was.allow,
        )
        self._pools[route] = self._pool_for(spec)
        self._replaced.append(old)
        log.info("%s now runs %s", route, spec.qualified_name)
        return old.spec

    def on_route_change(self, listener: RouteListener) -> None:
        """Call `listener(spec, added)` when a function is registered or released (the mesh advertises)."""
        self._route_listeners.append(listener)

    def functions(self) -> list[FunctionSpec]:
        return [pool.spec for pool in self._pools.values()]

    def pool(self, route: str) -> FunctionPool | None:
        return self._pools.get(route)

    def has_local(self, route: str) -> bool:
        return route in self._pools

    def public_routes(self) -> list[str]:
        return sorted(route for route, pool in self._pools.items() if not pool.spec.private)

    # -- the event bus -------------------------------------------------------------------------------------
    def dispatch(self, event: EventEnvelope, *, external: bool = False) -> None:
        """Deliver an event: to a local function, a local inbox, or across the mesh.

        `external` is set for events from outside the process, which may not reach private functions.
        """
        pool = self._pools.get(event.to)  # type: ignore[arg-type]
        if pool is not None and not (external and pool.spec.private):
            self._submit(pool, event, external)
            return
        self._dispatch_elsewhere(event, external)

    def _submit(self, pool: FunctionPool, event: EventEnvelope, external: bool) -> None:
        if pool.spec.allow is not None and external:
            check_caller(self.name, pool.spec.route, pool.spec.allow, event)
        # an event from outside arrives in a loop callback, not inside another handler: it may run inline
        reply = pool.submit(event, inline=external)
        if reply is not None:
            self.deliver_reply(reply)

    def _dispatch_elsewhere(self, event: EventEnvelope, external: bool) -> None:
        if event.to == self.inbox and not external:  # a reply to us: the common case, no parsing
            self.resolve_reply(event)
            return
        if not event.to:
            raise AppError(400, "Missing routing path")
        route, origin = Address.parse(event.to)
        if not route:  # a reply inbox: only replies travel there, and never from outside
            if external:
                raise AppError(403, "A reply inbox cannot be addressed from outside")
        elif route in self._pools and (origin is None or origin == self.origin):
            pool = self._pools[route]
            if external and pool.spec.private:
                raise AppError(403, f"Route {route} is private")
            event.to = route
            self._submit(pool, event, external)
            return
        if origin is not None and origin != self.origin:
            if self.remote is None or external:
                raise AppError(404, f"Origin {origin} is not reachable")
            self.remote.send(origin, event)
            return
        target = self.remote.pick(route) if self.remote is not None and not external else None
        if target is None:
            raise AppError(404, f"Route {route} not found")
        self.remote.send(target, event)  # type: ignore[union-attr]

    def deliver_reply(self, reply: EventEnvelope) -> None:
        """Send a function's reply on its way; a reply that cannot be delivered is logged, not raised."""
        if reply.to == self.inbox:  # to a request of ours: the usual case, straight to its caller
            self.resolve_reply(reply)
            return
        try:
            self.dispatch(reply)
        except AppError as exc:
            log.warning("Reply %s to %s not delivered: %s", reply.cid, reply.to, exc.message)

    # -- pending requests ----------------------------------------------------------------------------------
    async def call(
        self,
        event: EventEnvelope,
        timeout: float,
        *,
        external: bool = False,
        idempotent: bool | None = None,
    ) -> EventEnvelope:
        """Dispatch `event` and await its reply; TimeoutError after `timeout` seconds.

        The event's deadline becomes at most `timeout` from now. A request to another app whose instance
        leaves, dies, cannot be reached or refuses for overload is sent again to another instance when the
        route is safe to retry (`idempotent`: the caller's say for this call; None: the route's declaration).
        """
        caller_cid = event.cid  # the caller's own correlation id comes back on the reply
        event.reply_to = self.inbox
        started = time.perf_counter()
        deadline = started + timeout
        if event.deadline is None or deadline < event.deadline:
            event.deadline = deadline
        pool = self._pools.get(event.to)  # type: ignore[arg-type]
        if pool is not None and not (external and pool.spec.private):
            if pool.spec.allow is not None and external:
                check_caller(self.name, pool.spec.route, pool.spec.allow, event)
            if pool.answers_inline:  # its reply comes straight to a future: no correlation id needed
                return await self._call_here(pool, event, timeout, started)
            # a plain `def` handler or a stream, run on a later turn: its reply takes this cid and arrives
            # through the inbox like any other
            pool.submit(event)
            cid = event.cid = new_event_id()
        else:
            cid = event.cid = new_event_id()
            self.dispatch(event, external=external)
        replies = self.replies
        future = replies.expect(self.loop, cid, event.to, timeout)
        try:
            reply = await future
            target = replies.targets.get(cid)
            if target is not None:  # it went to another app
                if reply.status == 503:  # it left, died, was unreachable, refused or stalled: failover
                    reply = await self._failover.settle(self, event, cid, target, reply, idempotent, started)
                elif self.remote is not None:  # the usual answer: no coroutine for it
                    self.remote.outcome(target, event.to or "", reply.status, time.perf_counter() - started)
        except TimeoutError:
            target = replies.targets.get(cid)
            if target is not None and self.remote is not None:
                self.remote.outcome(target, event.to or "", None, time.perf_counter() - started)
            raise
        finally:
            replies.done(cid)
            event.cid = caller_cid
        reply.round_trip = (time.perf_counter() - started) * 1000
        reply.cid = caller_cid
        return reply

    async def _call_here(
        self, pool: FunctionPool, event: EventEnvelope, timeout: float, started: float
    ) -> EventEnvelope:
        """A request to an async function of this app: its first step may run now (the caller awaits), and
        a reply made on a later turn comes straight to the future this awaits."""
        loop = self.loop
        awaited: asyncio.Future[EventEnvelope] = loop.create_future()
        reply = pool.submit(event, inline=True, awaited=awaited)
        if reply is None:
            replies = self.replies
            replies.expect_local(loop, awaited, event.to, timeout)
            try:
                reply = await awaited
            finally:
                replies.local.pop(awaited, None)  # the sweep or a stop may have taken it
        reply.round_trip = (time.perf_counter() - started) * 1000
        reply.cid = event.cid  # the caller's own, untouched on this path
        return reply

    def stream(
        self,
        event: EventEnvelope,
        idle: float,
        *,
        external: bool = False,
        idempotent: bool | None = None,
    ) -> EventStream:
        """Send `event` as a stream request and return its stream (`idle`: the allowance between segments,
        in seconds); `external`: from outside the process (private functions refuse it); `idempotent`: the
        caller's say on its failover before the first segment (None: the route's declaration)."""

        def submit(request: EventEnvelope) -> None:
            self.dispatch(request, external=external)

        return self.streams.open(event, idle, submit, idempotent=idempotent)

    def note_target(self, event: EventEnvelope, origin: str) -> None:
        """Remember where a pending request of ours went, so it can fail at once if that app leaves."""
        cid = event.cid
        if cid is not None and event.reply_to == self.inbox:
            targets = self.replies.targets
            if cid not in targets:  # a first attempt: it earns the retry budget its share
                self.retry_budget.deposit(self.loop.time())
            targets[cid] = origin

    def fail_requests_to(self, origin: str, message: str, *, stalled: bool = False) -> int:
        """Answer every pending request sent to `origin` with a 503 now, rather than at its timeout: it left
        or died, or (`stalled`) it was taken out of rotation. Each is sent again if safe to retry; a stalled
        one that is not keeps waiting for its reply."""
        doomed = self.replies.sent_to(origin)
        exception = STALLED if stalled else PEER_LOST
        for cid in doomed:
            self.resolve_reply(EventEnvelope(self.inbox, message, status=503, cid=cid, exception=exception))
        if stalled:  # a stream has its own idle allowance: an outlier's streams go on
            return len(doomed)
        return len(doomed) + self.streams.peer_gone(origin, message, PEER_LOST)

    def waiting(self, cid: str) -> bool:
        """Whether a request of ours with this cid still awaits its reply."""
        return self.replies.waiting(cid)

    def fail_requests(self, cids: Iterable[str], message: str, *, streams_with: str | None = None) -> int:
        """Answer the pending requests among `cids` with a 503 now (the way they went broke; each is sent
        again if safe to retry), and end the streams with `streams_with`; how many ended."""
        doomed = self.replies.sent_elsewhere(cids)
        for cid in doomed:
            self.resolve_reply(EventEnvelope(self.inbox, message, status=503, cid=cid, exception=PEER_LOST))
        if streams_with is None:
            return len(doomed)
        return len(doomed) + self.streams.peer_gone(streams_with, message, PEER_LOST, alive=True)

    def resolve_reply(self, reply: EventEnvelope) -> None:
        """Hand a reply to the request waiting for it (a late or unknown one is dropped)."""
        if not self.replies.resolve(reply) and not self.streams.arrive(reply):  # a stream's, if not a reply
            self.late_replies += 1
            log.debug("Late or unknown reply %s from %s dropped", reply.cid, reply.sender)

    def route_exists(self, route: str) -> bool:
        if route in self._pools:
            return True
        return self.remote is not None and bool(self.remote.origins(route))

    def route_origins(self, route: str) -> list[str]:
        local = [self.origin] if route in self._pools else []
        remote = self.remote.origins(route) if self.remote is not None else []
        return local + [o for o in remote if o != self.origin]


class RouteListener(Protocol):
    def __call__(self, spec: FunctionSpec, added: bool) -> None: ...
