"""Framed TCP: the direct path's default carrier, a link's Socket over a plain (or TLS) TCP connection
(docs/protocol/direct.md#framed-tcp).

A frame is a 4-byte big-endian length and that many bytes: one message. With the length's high bit set it
is a control frame instead: one byte of kind (ping, pong, close) and, for close, a 2-byte code and the
reason in UTF-8. Frames are read straight into their own buffer once their length is known (a large record
is not copied on its way in), and written with the header beside the record, not joined to it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

from meshkit.core import Buffer
from meshkit.mesh._link import LinkClosed

log = logging.getLogger("meshkit.mesh.direct")

HEADER = struct.Struct(">I")
CONTROL = 0x8000_0000
PING, PONG, CLOSE = 1, 2, 3
TOO_BIG = 1009  # the close code of a frame larger than the link takes (as a websocket's)
_SHARED = 64 * 1024  # small frames are cut out of one buffer this size; a larger one gets a buffer of its own
_BACKLOG = 256  # messages received but not yet read: past it (or past _BACKLOG_BYTES), it stops reading
_BACKLOG_BYTES = 16 * 1024 * 1024
# large buffers kept for reuse, at most this many bytes a link: frames arrive in bursts, ahead of the reader
_SPARE_BYTES = 2 * 1024 * 1024


class FramedSocket(asyncio.BufferedProtocol):
    """One end of a framed TCP connection; `max_size`: the largest message it takes (larger: it closes).

    `keepalive`: seconds between pings; a peer not heard from (any frame) in twice that is dropped.
    """

    def __init__(self, max_size: int, keepalive: float) -> None:
        self.max_size = max_size
        self.keepalive = keepalive
        self.transport: asyncio.Transport | None = None
        self.remote = "an unknown address"
        self._buffer = bytearray(_SHARED)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self._large: bytearray | None = None  # the message being read into a buffer of its own
        self._large_view: memoryview | None = None
        self._filled = 0
        self._messages: deque[bytes | bytearray] = deque()
        self._previous: bytearray | None = None  # the large message recv last returned
        self._spares: list[bytearray] = []  # large messages' buffers, for the next ones
        self._spare_bytes = 0
        self._backlog_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._reading_paused = False
        self.closed: str | None = None  # why it ended, once it has
        self._heard = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- the protocol's side ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the base class
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote = f"{peer[0]}:{peer[1]}"
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        if self.keepalive > 0:
            self._timer = loop.call_later(self.keepalive, self._tick)
        if not self.opened.done():
            self.opened.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large_view is not None:
            return self._large_view[self._filled :]
        if self._end == len(self._buffer):  # what is left of a frame goes to the front
            kept = self._end - self._start
            self._buffer[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._heard = asyncio.get_running_loop().time()
        if self._large is not None:
            self._filled += nbytes
            if self._filled == len(self._large):
                message = self._large
                self._large = self._large_view = None
                self._arrived(message)
            return
        self._end += nbytes
        self._frames()

    def _frames(self) -> None:
        buffer, view = self._buffer, self._view
        while self.closed is None:
            available = self._end - self._start
            if available < 4:
                break
            (length,) = HEADER.unpack_from(buffer, self._start)
            size = length & ~CONTROL
            if size > self.max_size:
                self._close(TOO_BIG, f"a frame of {size} bytes (at most {self.max_size})")
                return
            if available >= 4 + size:
                at = self._start + 4
                self._start = at + size
                payload = bytes(view[at : at + size])
                if length & CONTROL:
                    self._control(payload)
                else:
                    self._arrived(payload)
            elif not length & CONTROL and size > _SHARED - 4:  # read the rest straight into its own buffer
                self._large = self._buffer_for(size)
                self._large_view = memoryview(self._large)
                self._filled = available - 4
                self._large[: self._filled] = view[self._start + 4 : self._end]
                self._start = self._end = 0
                return
            else:
                break
        if self._start == self._end:
            self._start = self._end = 0

    def _buffer_for(self, size: int) -> bytearray:
        spares = self._spares
        if spares and len(spares[-1]) >= size:
            spare = spares.pop()
            self._spare_bytes -= len(spare)
            if len(spare) > size:
                del spare[size:]  # shrinking keeps its memory (CPython reallocates only below half)
            return spare
        return bytearray(size)

    def _recycle(self, message: bytes | bytearray) -> None:
        """Keep the large message the reader has finished with for the next one (a fresh 200 KB buffer
        costs its zeroing and page faults each time), unless anything still refers to it: a view (a
        segment's payload is one) holds a reference to it too."""
        # three references: the caller's, the argument, getrefcount's own
        if isinstance(message, bytearray) and sys.getrefcount(message) <= 3:
            if self._spare_bytes + len(message) <= _SPARE_BYTES:
                self._spares.append(message)
                self._spare_bytes += len(message)

    def _arrived(self, message: bytes | bytearray) -> None:
        self._messages.append(message)
        self._backlog_bytes += len(message)
        full = len(self._messages) >= _BACKLOG or self._backlog_bytes >= _BACKLOG_BYTES
        if full and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _control(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == bytes((PING,)):
            self._write_control(bytes((PONG,)))
        elif kind == bytes((CLOSE,)):
            code = int.from_bytes(payload[1:3], "big") if len(payload) >= 3 else 1005
            reason = payload[3:].decode("utf-8", "replace")
            self._ended(f"closed ({code} {reason})".replace(" )", ")"))
            if self.transport is not None:
                self.transport.close()
        # a pong, or a kind of a later version: being heard from was the point

    def _tick(self) -> None:
        self._timer = None
        if self.closed is not None or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        silent = loop.time() - self._heard
        if silent > 2 * self.keepalive:
            self._ended(f"no frame from the peer in {silent:.1f} s")
            self.transport.abort()
            return
        self._write_control(bytes((PING,)))
        self._timer = loop.call_later(self.keepalive, self._tick)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def eof_received(self) -> bool | None:
        self._ended("connection closed by the peer")
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(f"connection lost ({type(exc).__name__}: {exc})" if exc else "connection lost")
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _ended(self, why: str) -> None:
        if self.closed is None:
            self.closed = why
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self, code: int, why: str) -> None:
        """Say why in a close frame, end, and close the transport (what is written still goes out first)."""
        if self.closed is None:
            self._write_control(bytes((CLOSE,)) + code.to_bytes(2, "big") + why.encode()[:120])
            self._ended(f"closed ({code} {why})")
        if self.transport is not None:
            self.transport.close()

    def _write_control(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(HEADER.pack(CONTROL | len(payload)) + payload)

    # -- the link's side (meshkit.mesh._link.Socket) -------------------------------------------------------
    async def send(self, message: bytes) -> None:
        await self._write(len(message), message)

    async def send_pieces(self, pieces: tuple[bytes, Buffer]) -> None:
        head, body = pieces
        await self._write(len(head) + len(body), head, body)

    async def _write(self, size: int, *pieces: Buffer) -> None:
        """One data frame of `size` bytes, the pieces written beside its header (never joined)."""
        transport = self.transport
        if self.closed is not None or transport is None or transport.is_closing():
            raise LinkClosed(self.closed or "connection lost")
        transport.writelines((HEADER.pack(size), *pieces))
        if self._paused:
            drained = self._drained
            if drained is None or drained.done():
                drained = self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(drained)  # one wait for every sender: a cancelled one leaves it to the rest
            if self.closed is not None:
                raise LinkClosed(self.closed)

    async def recv(self) -> bytes:
        while not self._messages:
            if self.closed is not None:
                raise LinkClosed(self.closed)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        previous, self._previous = self._previous, None
        if previous is not None:  # the reader asks for the next message: it is done with the last
            self._recycle(previous)
        message = self._messages.popleft()
        if isinstance(message, bytearray):
            self._previous = message
        self._backlog_bytes -= len(message)
        drained = len(self._messages) < _BACKLOG // 2 and self._backlog_bytes < _BACKLOG_BYTES // 2
        if self._reading_paused and drained and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return message  # type: ignore[return-value]  # a large one is a bytearray, read as bytes are

    async def close(self, code: int, reason: str) -> None:
        self._close(code, reason)


def split_address(address: str) -> tuple[str, str, int]:
    """`tcp://host:port` or `tls://host:port` -> (scheme, host, port); ValueError for anything else."""
    scheme, sep, rest = address.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if not sep or scheme not in ("tcp", "tls") or not host or not port.isdigit():
        raise ValueError(f"not a tcp:// or tls:// host:port address: {address!r}")
    return scheme, host.strip("[]"), int(port)


async def dial(address: str, *, ssl: Any, max_size: int, keepalive: float) -> FramedSocket:
    """A framed connection to `address` (tcp:// or tls://); `ssl`: the client context for tls://."""
    scheme, host, port = split_address(address)
    loop = asyncio.get_running_loop()
    _, socket = await loop.create_connection(
        lambda: FramedSocket(max_size, keepalive),
        host,
        port,
        ssl=ssl if scheme == "tls" else None,
        server_hostname=host if scheme == "tls" else None,
    )
    return socket


async def listen(
    host: str,
    port: int,
    *,
    ssl: Any,
    max_size: int,
    keepalive: float,
    serve: Callable[[FramedSocket], Coroutine[Any, Any, None]],
) -> asyncio.Server:
    """Take framed connections on host:port (0: any free port); `serve(socket)` runs for each."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def ended(socket: FramedSocket, task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug: said, and that connection ends
            log.error("A direct connection from %s failed", socket.remote, exc_info=task.exception())
            if socket.transport is not None:
                socket.transport.abort()

    def made() -> FramedSocket:
        socket = FramedSocket(max_size, keepalive)

        def start(_: object) -> None:
            if socket.closed is None:
                task = loop.create_task(serve(socket))
                tasks.add(task)
                task.add_done_callback(functools.partial(ended, socket))

        socket.opened.add_done_callback(start)
        return socket

    return await loop.create_server(made, host, port, ssl=ssl)
