"""One admitted direct connection to a peer: records out in one message per loop turn, records in to the
transport (docs/protocol/direct.md).

A link carries the same records the broker would (meshkit/mesh/_frames.py), so what arrives is delivered
by the same code. It remembers which of our requests it carried, so that when it breaks those alone are
failed over (sent again when safe to retry) instead of waiting for their timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from meshkit.core import AppError, Buffer, CodecError, EventEnvelope, encode, encode_split, stamp
from meshkit.mesh._frames import (
    batch_record,
    event_record,
    event_record_pieces,
    event_records,
    segment_records,
)

log = logging.getLogger("meshkit.mesh.direct")

DIRECT_SEGMENT_SIZE = 1024 * 1024  # an event larger than this crosses a link in segments of this size
BATCH_LIMIT = 256 * 1024  # records of one loop turn go as one message up to this many bytes
PIECES_FROM = 64 * 1024  # a bytes body this large goes beside its record's head, not copied into it
# a record, or its head and the body that follows it (event_record_pieces)
Record = bytes | tuple[bytes, Buffer]


class LinkClosed(Exception):
    """The other end closed the connection, or it broke."""


class Socket(Protocol):
    """A message-framed, ordered connection (the websocket of a link), as a link uses it."""

    async def send(self, message: bytes) -> None: ...

    async def send_pieces(self, pieces: tuple[bytes, Buffer]) -> None:
        """One message whose bytes are the pieces' concatenation."""

    async def recv(self) -> bytes:
        """The next message; LinkClosed when the connection is gone."""

    async def close(self, code: int, reason: str) -> None: ...


class Link:
    """An admitted connection to `peer`, dialed by us (`dialed`) or by it."""

    def __init__(
        self,
        peer: str,
        socket: Socket,
        *,
        dialed: bool,
        inbox: str,
        reply_topic: Callable[[], str | None],
        deliver: Callable[[bytes, str], None],
        max_event_bytes: int,
    ) -> None:
        self.peer = peer
        self.socket = socket
        self.dialed = dialed
        self.inbox = inbox
        self._reply_topic = reply_topic
        self._deliver = deliver
        self.max_event_bytes = max_event_bytes
        self.requests: set[str] = set()  # cids of our requests it carried (pruned of answered ones)
        self._pruned_at = 64
        self._outgoing: list[Record] = []
        self._ready = asyncio.Event()
        self.closed = False
        self.sent = self.received = 0

    # -- sending -------------------------------------------------------------------------------------------
    def send_event(self, event: EventEnvelope) -> None:
        """Encode now (errors surface to the caller), send with the rest of this loop turn's records."""
        if self.closed:
            raise AppError(503, f"Direct connection to {self.peer} closed")
        if event.trace_id is not None:
            stamp(event)
        self._outgoing.extend(self._records(event))
        self._ready.set()
        if event.reply_to == self.inbox and event.cid is not None:
            self.requests.add(event.cid)

    def _records(self, event: EventEnvelope) -> Sequence[Record]:
        reply = self._reply_topic()  # the broker still reaches us, should this link break
        try:
            body = event.body
            if isinstance(body, bytes | bytearray) and PIECES_FROM <= len(body) < DIRECT_SEGMENT_SIZE // 2:
                head, data = event_record_pieces(self.peer, event, reply)
                self._check_size(len(head) + len(data))
                return [(head, data)]
            if not (isinstance(body, bytes | str | bytearray) and len(body) > DIRECT_SEGMENT_SIZE):
                record = event_record(self.peer, event, reply)
                if len(record) <= DIRECT_SEGMENT_SIZE:
                    self._check_size(len(record))
                    return [record]
            pieces = encode_split(event) or (encode(event),)
            size = sum(len(piece) for piece in pieces)
            self._check_size(size)
            if size > DIRECT_SEGMENT_SIZE:
                return segment_records(self.peer, pieces, DIRECT_SEGMENT_SIZE, reply)
            return event_records(self.peer, b"".join(pieces), DIRECT_SEGMENT_SIZE, reply)
        except CodecError as exc:
            raise AppError(500, str(exc)) from exc

    def _check_size(self, size: int) -> None:
        """As over the broker: an event larger than max.event.size is refused here, before it leaves."""
        if size > self.max_event_bytes:
            raise AppError(413, f"Event of {size} bytes exceeds max.event.size={self.max_event_bytes}")

    def prune(self, pending: Callable[[str], bool]) -> None:
        """Forget the requests no longer waiting for a reply, now and then (amortized: the set may double)."""
        if len(self.requests) >= 2 * self._pruned_at:
            self.requests = {cid for cid in self.requests if pending(cid)}
            self._pruned_at = max(64, len(self.requests))

    async def write(self) -> None:
        """Send what is queued, as it comes: whatever piled up while a send was under way leaves as one."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            records, self._outgoing = self._outgoing, []
            message: list[bytes] = []
            size = 0
            for record in records:
                if isinstance(record, tuple):  # a large one, alone: its body is written, never copied
                    if message:
                        await self._send(message)
                        message, size = [], 0
                    await self.socket.send_pieces(record)
                    self.sent += 1
                    continue
                if message and size + len(record) > BATCH_LIMIT:
                    await self._send(message)
                    message, size = [], 0
                message.append(record)
                size += len(record)
            if message:
                await self._send(message)

    async def _send(self, records: list[bytes]) -> None:
        await self.socket.send(records[0] if len(records) == 1 else batch_record(records))
        self.sent += len(records)

    # -- receiving -----------------------------------------------------------------------------------------
    async def read(self) -> None:
        """Deliver every message that arrives until the connection ends (LinkClosed)."""
        while True:
            message = await self.socket.recv()
            self.received += 1
            self._deliver(message, self.peer)
            del message  # framed TCP reuses a large message's buffer once nothing refers to it

    async def run(self) -> str:
        """Read and write until the connection ends either way; returns why it ended."""
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self.read(), name=f"meshkit:direct:read:{self.peer}"),
            loop.create_task(self.write(), name=f"meshkit:direct:write:{self.peer}"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.closed = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        error = next(iter(done)).exception()
        if isinstance(error, LinkClosed):
            return str(error) or "closed"
        return f"{type(error).__name__}: {error}"  # a broken socket reports in many ways; each ends it

    async def close(self, code: int = 1000, reason: str = "closing") -> None:
        self.closed = True
        try:
            await self.socket.close(code, reason)
        except Exception as exc:  # closing a broken socket may fail too: it is closed either way
            log.debug("Closing the direct connection to %s: %s", self.peer, exc)
