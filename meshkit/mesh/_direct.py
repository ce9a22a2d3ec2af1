"""The direct path (`mesh.transport=direct`): one admitted connection between two peers (framed TCP, or a
websocket), to the address one said in its join; the broker carries the rest (docs/protocol/direct.md).

Both peers dial, the higher origin a little later: one link a pair, and should the lower origin be unable
to reach the other, the other reaches it. When both dial at once, the lower origin's connection wins (it
refuses the other's before any event crosses). A peer is used directly only once its link is admitted
both ways; until then, after a link breaks, and for a peer that cannot be reached, events go over the
broker as before. A dial that fails is tried again with a growing pause while the peer stays in the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import msgpack
import websockets
from websockets.asyncio.client import ClientConnection, connect

from meshkit.core import Buffer
from meshkit.mesh._admission import MAX_HANDSHAKE_BYTES, NOT_YET, READY, Admission, Refused, refusal, unpack
from meshkit.mesh._link import Link, LinkClosed, Socket
from meshkit.mesh._tcp import FramedSocket, dial, listen
from meshkit.security import ClientTLS, MeshKeys

log = logging.getLogger("meshkit.mesh.direct")

REFUSED = 4403  # the close code of a connection refused admission
FIRST_RETRY, LAST_RETRY = 0.5, 30.0  # seconds between dials to a peer that cannot be reached
HIGHER_WAITS = 1.0  # seconds the higher origin leaves the lower to dial first
LOWER_WINS = "the lower origin's own connection is open or opening"
SCHEMES = ("ws://", "wss://", "tcp://", "tls://")  # what a peer's join may say it is reached at
OPENING = "meshkit-direct"  # the type of a framed connection's first message, which presents the mesh key

#: a link ended: (the peer, the cids of our requests it carried, why)
LinkLost = Callable[[str, set[str], str], None]


class ClientSocket:
    """A link's Socket over the websockets client."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: bytes) -> None:
        try:
            await self.ws.send(message)
        except websockets.ConnectionClosed as exc:
            raise LinkClosed(_why(exc)) from None

    async def send_pieces(self, pieces: tuple[bytes, Buffer]) -> None:
        await self.send(b"".join(pieces))  # one websocket message: joined (framed TCP writes them apart)

    async def recv(self) -> bytes:
        try:
            message = await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            raise LinkClosed(_why(exc)) from None
        if not isinstance(message, bytes):
            raise LinkClosed("a text message on a direct connection")
        return message

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


def _why(exc: websockets.ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return f"closed ({frame.code} {frame.reason})".replace(" )", ")") if frame else "connection lost"


class DirectLinks:
    """This app's direct connections, by peer origin, and the peers' direct addresses."""

    def __init__(
        self,
        admission: Admission,
        keys: MeshKeys,
        *,
        address: str | None,
        deliver: Callable[[bytes, str], None],
        on_lost: LinkLost,
        inbox: str,
        reply_topic: Callable[[], str | None],
        max_event_bytes: int,
        connect_timeout: float = 3.0,
        keepalive: float = 5.0,
        tls: ClientTLS | None = None,
        listener: tuple[str, int] | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        """`listener`: (host, port) to take framed TCP links on, with `server_tls` (server.ssl.*)."""
        self.admission = admission
        self.tls = tls or ClientTLS()  # for wss:// peers: the CA to trust, this app's certificate (tls.*)
        self.origin = admission.origin
        self.keys = keys
        self.address = address  # where peers reach us; None: this app takes the broker only
        self.listener = listener
        self._server_tls = server_tls
        self._server: asyncio.Server | None = None
        self._deliver = deliver
        self._on_lost = on_lost
        self.inbox = inbox
        self._reply_topic = reply_topic
        self.max_event_bytes = max_event_bytes
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.links: dict[str, Link] = {}
        self.addresses: dict[str, str] = {}  # peer origin -> its direct address
        self.failures: dict[str, str] = {}  # peer origin -> why its last dial failed
        self._dialing: dict[str, asyncio.Task[None]] = {}
        self._connecting: set[str] = set()  # peers a dial of ours is connecting to or admitting with now
        # callers refused once as not yet vouched for (a join outran its vouch here): a repeat is a warning
        self._unvouched_callers: set[str] = set()
        self._serving: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.sent = 0  # records sent over links that have ended (the open ones count their own)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def max_message(self) -> int:
        return 2 * 1024 * 1024 + self.max_event_bytes // 8

    async def start(self) -> None:
        """Take framed TCP links, if this app's address is framed TCP: before the join says where."""
        if self.listener is None or self.address is None:
            return
        host, port = self.listener
        self._server = await listen(
            host,
            port,
            ssl=self._server_tls,
            max_size=MAX_HANDSHAKE_BYTES,  # until admitted: a stranger gets no large buffer of ours
            keepalive=self.keepalive,
            serve=self._accept_framed,
        )
        bound = self._server.sockets[0].getsockname()[1]
        if self.address.endswith(":0"):
            self.address = f"{self.address[:-2]}:{bound}"
        log.info("Taking direct connections on %s:%d (framed TCP), reached at %s", host, bound, self.address)

    async def _accept_framed(self, socket: FramedSocket) -> None:
        """An incoming framed connection: its first message presents the mesh key, then it is a link's."""
        remote = socket.remote
        try:
            async with asyncio.timeout(self.connect_timeout):
                opening = msgpack.unpackb(await socket.recv())
            if not isinstance(opening, dict) or opening.get("type") != OPENING:
                raise ValueError("not a meshkit direct connection")
        except (LinkClosed, TimeoutError) as exc:
            why = str(exc) or f"nothing within {self.connect_timeout:g} s"
            log.warning("A direct connection from %s ended before it said who it is: %s", remote, why)
            await socket.close(REFUSED, "no opening")
            return
        except Exception as exc:  # garbage: not one of ours
            log.warning("Refused a direct connection from %s: %s", remote, exc)
            await socket.close(REFUSED, "not a meshkit direct connection")
            return
        key = opening.get("key")
        if not self.keys.accepts(key if isinstance(key, str) else None):
            log.warning("Refused a direct connection from %s: missing or wrong mesh key", remote)
            await socket.close(REFUSED, "missing or wrong mesh key")
            return
        await self.accept(socket, remote)

    def link(self, origin: str) -> Link | None:
        link = self.links.get(origin)
        return link if link is not None and not link.closed else None

    def path(self, origin: str) -> dict[str, Any]:
        """How events to `origin` travel now, for /info/routes."""
        direct = self.link(origin) is not None
        info: dict[str, Any] = {"path": "direct" if direct else "broker"}
        address = self.addresses.get(origin)
        if address is not None:
            info["direct_address"] = address
        if not direct and origin in self.failures:
            info["direct_failure"] = self.failures[origin]
        return info

    # -- what the mesh tells us about peers ----------------------------------------------------------------
    def learn(self, origin: str, address: object) -> None:
        """A peer's join said where it takes direct connections (or nothing: it takes the broker only)."""
        if self.closing:
            return
        if not isinstance(address, str) or not address.startswith(SCHEMES):
            self.addresses.pop(origin, None)
            return
        self.addresses[origin] = address
        if self.enabled and origin not in self._dialing and self.link(origin) is None:
            first = 0.0 if self.origin < origin else HIGHER_WAITS
            dial = self._dial(origin, first)
            task = asyncio.get_running_loop().create_task(dial, name=f"meshkit:dial:{origin}")
            self._dialing[origin] = task
            task.add_done_callback(functools.partial(self._dialed, origin))

    def _dialed(self, origin: str, task: asyncio.Task[None]) -> None:
        if self._dialing.get(origin) is task:
            del self._dialing[origin]

    def forget(self, origin: str) -> None:
        """The peer left the mesh: no more dials, and its link closes (its requests were failed already)."""
        self.addresses.pop(origin, None)
        self.failures.pop(origin, None)
        dial = self._dialing.pop(origin, None)
        if dial is not None:
            dial.cancel()
        link = self.links.pop(origin, None)
        if link is not None:
            self._background(link.close(1000, "peer left the mesh"))

    # -- dialing -------------------------------------------------------------------------------------------
    async def _dial(self, origin: str, first: float) -> None:
        await asyncio.sleep(first)
        pause = FIRST_RETRY
        while not self.closing and origin in self.addresses and self.link(origin) is None:
            address = self.addresses[origin]
            self._connecting.add(origin)
            try:
                socket = await self._open(origin, address)
            finally:
                self._connecting.discard(origin)
            if socket is None:
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_RETRY)
                continue
            pause = FIRST_RETRY
            self.failures.pop(origin, None)
            await self._serve(origin, socket, dialed=True)
            await asyncio.sleep(FIRST_RETRY)  # then dial again, if the peer is still in the mesh

    async def _open(self, origin: str, address: str) -> Socket | None:
        """A connection to `origin` admitted both ways, or None (why: logged, and in `failures`)."""
        try:
            socket = await asyncio.wait_for(self._connect(address), self.connect_timeout)
        except Exception as exc:  # refused, unreachable, silent, not admitted: the broker it is
            tls = self.tls.describe_failure(exc, address)
            reason = f"TLS handshake failed: {tls}" if tls else str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.connect_timeout:g} s"
            level = logging.WARNING if origin not in self.failures else logging.INFO
            log.log(level, "No direct connection to %s at %s (%s): using the broker", origin, address, reason)
            self.failures[origin] = reason
            return None
        try:
            await self._handshake_as_caller(origin, socket)
        except (Refused, LinkClosed, TimeoutError) as exc:
            # a port that takes the connection and never answers: said as for one that never connects
            reason = str(exc) or f"no answer within {self.connect_timeout:g} s"
            # both dialed at once, or a join outran the monitors' word of us at the peer: said once as info
            expected = LOWER_WINS in reason or (NOT_YET in reason and origin not in self.failures)
            level = logging.INFO if expected else logging.WARNING
            log.log(level, "Direct connection to %s at %s not admitted: %s", origin, address, reason)
            self.failures[origin] = reason
            await socket.close(REFUSED, "not admitted")
            return None
        return socket

    async def _connect(self, address: str) -> Socket:
        if address.startswith(("tcp://", "tls://")):
            framed = await dial(
                address,
                ssl=self.tls.context if address.startswith("tls://") else None,
                max_size=MAX_HANDSHAKE_BYTES,  # until admitted
                keepalive=self.keepalive,
            )
            await framed.send(msgpack.packb({"type": OPENING, "key": self.keys.own}))
            return framed
        ws = await connect(
            address,
            ssl=self.tls.for_url(address),
            additional_headers=self.keys.headers(),
            open_timeout=None,  # the caller's wait_for bounds it
            ping_interval=self.keepalive,  # finds a peer that hangs with its socket open
            ping_timeout=2 * self.keepalive,
            max_size=self.max_message,
            compression=None,
            proxy=None,
        )
        return ClientSocket(ws)

    async def _handshake_as_caller(self, callee: str, socket: Socket) -> None:
        async with asyncio.timeout(self.connect_timeout):
            hello, mine = self.admission.hello(callee)
            await socket.send(hello)
            await socket.send(self.admission.proof(callee, mine, await socket.recv()))
            answer = await socket.recv()
            if answer != READY:
                unpack(answer, "ready")  # raises Refused with the peer's reason

    # -- accepting -----------------------------------------------------------------------------------------
    async def accept(self, socket: Socket, remote: str) -> None:
        """Serve one incoming connection (the mesh key was checked at the door) until it ends."""
        if not self.enabled or self.closing:
            await socket.send(refusal("this app takes no direct connections"))
            await socket.close(REFUSED, "direct path off")
            log.warning("Refused a direct connection from %s: this app takes the broker only", remote)
            return
        caller = "an unknown app"
        try:
            async with asyncio.timeout(self.connect_timeout):
                caller, theirs, mine, challenge = self.admission.challenge(await socket.recv())
                await socket.send(challenge)
                self.admission.admit(caller, theirs, mine, await socket.recv())
                if self.origin < caller and (caller in self._connecting or self.link(caller) is not None):
                    raise Refused(LOWER_WINS)  # both dialed at once: one link a pair, ours
                await socket.send(READY)
        except (Refused, TimeoutError) as exc:
            reason = str(exc) or "no handshake in time"
            level = (
                logging.INFO
                if reason == LOWER_WINS or self._first_unvouched(caller, reason)
                else logging.WARNING
            )
            log.log(level, "Refused a direct connection from %s claiming %s: %s", remote, caller, reason)
            with contextlib.suppress(Exception):
                await socket.send(refusal(reason))
                await socket.close(REFUSED, "not admitted")
            return
        except LinkClosed as exc:
            log.warning("A direct connection from %s ended in its handshake: %s", remote, exc)
            return
        await self._serve(caller, socket, dialed=False)

    def _first_unvouched(self, caller: str, reason: str) -> bool:
        """Whether this refusal is the first of `caller` as not yet vouched for: at start, an app's dial can
        outrun the monitors' word of it here. Remembered for at most 1,024 callers (then: all warnings)."""
        if NOT_YET not in reason or caller in self._unvouched_callers or len(self._unvouched_callers) >= 1024:
            return False
        self._unvouched_callers.add(caller)
        return True

    async def _serve(self, peer: str, socket: Socket, *, dialed: bool) -> None:
        if isinstance(socket, FramedSocket):
            socket.max_size = self.max_message  # admitted both ways: it carries events now
        link = Link(
            peer,
            socket,
            dialed=dialed,
            inbox=self.inbox,
            reply_topic=self._reply_topic,
            deliver=self._deliver,
            max_event_bytes=self.max_event_bytes,
        )
        old = self.links.get(peer)
        self.links[peer] = link
        if old is not None:  # the peer dialed again: the old connection is dead to it
            await old.close(1000, "replaced by a new connection")
        log.info("Direct connection to %s open (%s)", peer, "dialed" if dialed else "accepted")
        started = time.monotonic()
        reason = await link.run()
        self.sent += link.sent
        if self.links.get(peer) is link:
            del self.links[peer]
        if not self.closing:
            log.warning(
                "Direct connection to %s lost after %.1f s (%s): the broker carries its events",
                peer,
                time.monotonic() - started,
                reason,
            )
        self._on_lost(peer, link.requests, reason)
        await link.close(1000, "closed")

    # -- stopping ------------------------------------------------------------------------------------------
    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._dialing.values()):
            task.cancel()
        links = list(self.links.values())
        await asyncio.gather(*(link.close(1001, "app stopping") for link in links), return_exceptions=True)
        pending = [*self._dialing.values(), *self._serving]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
