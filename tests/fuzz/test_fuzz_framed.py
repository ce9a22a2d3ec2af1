"""The direct path's framed TCP reader (meshkit/mesh/_tcp.py): any bytes a peer could send, cut
into pieces anywhere, against a reference reading of the same stream.

For every input: the reader never raises, delivers exactly the messages the reference finds (data frames
whole and in order, control frames not delivered, a ping answered with a pong), and stops at the first
frame larger than the link takes, with a close frame of code 1009 and the connection closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshkit.mesh._tcp import CONTROL, HEADER, FramedSocket
from tests.fuzz import fuzz_settings, tally

MAX = 100_000


class Transport:
    """What FramedSocket asks of its transport, recording what it wrote and whether it closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, pieces: Any) -> None:
        for piece in pieces:
            self.written += piece

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def reference(stream: bytes) -> tuple[list[bytes], int, bool]:
    """(the data messages, the pings, whether a frame too large ended it) a correct reader sees."""
    messages, pings, at = [], 0, 0
    while len(stream) - at >= 4:
        (length,) = HEADER.unpack_from(stream, at)
        size = length & ~CONTROL
        if size > MAX:
            return messages, pings, True
        if len(stream) - at - 4 < size:
            break
        payload = stream[at + 4 : at + 4 + size]
        at += 4 + size
        if not length & CONTROL:
            messages.append(payload)
        elif payload[:1] == b"\x01":
            pings += 1
        elif payload[:1] == b"\x03":  # the peer closed: nothing after it is read
            break
    return messages, pings, False


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Well-formed frames of many sizes, control frames, garbage and oversize headers, in any order."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind <= 4:
            body = draw(st.binary(max_size=70_000 if kind == 0 else 300))
            parts.append(HEADER.pack(len(body)) + body)
        elif kind == 5:
            parts.append(HEADER.pack(CONTROL | 1) + draw(st.sampled_from([b"\x01", b"\x02", b"\x09"])))
        elif kind == 6:
            parts.append(HEADER.pack(draw(st.integers(MAX + 1, 2**32 - 1))))
        elif kind == 7:
            parts.append(HEADER.pack(CONTROL | 5) + b"\x03" + (1000).to_bytes(2, "big") + b"by")
        else:
            parts.append(draw(st.binary(max_size=40)))
    return b"".join(parts)


@fuzz_settings()
@given(streams(), st.lists(st.integers(1, 80_000), min_size=1, max_size=12))
def test_the_framed_reader_reads_what_the_reference_reads(stream: bytes, cuts: list[int]) -> None:
    tally("framed TCP reader")
    asyncio.run(_read(stream, cuts))


async def _read(stream: bytes, cuts: list[int]) -> None:
    socket = FramedSocket(MAX, keepalive=0)
    transport = Transport()
    socket.connection_made(transport)  # type: ignore[arg-type]
    at, turn = 0, 0
    while at < len(stream) and socket.closed is None:
        buffer = socket.get_buffer(-1)
        step = min(cuts[turn % len(cuts)], len(buffer), len(stream) - at)
        buffer[:step] = stream[at : at + step]
        socket.buffer_updated(step)
        at, turn = at + step, turn + 1
    delivered = []
    while socket._messages:
        delivered.append(bytes(socket._messages.popleft()))
    messages, pings, too_large = reference(stream)
    assert delivered == messages
    pongs = bytes(transport.written).count(HEADER.pack(CONTROL | 1) + b"\x02")
    assert pongs == pings
    if too_large:
        assert socket.closed is not None and "1009" in socket.closed and transport.closing
        assert b"\x03" + (1009).to_bytes(2, "big") in bytes(transport.written)  # it said why
