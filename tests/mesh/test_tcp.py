"""Framed TCP, the direct path's carrier (meshkit/mesh/_tcp.py), over real loopback connections: messages
of every size cross whole and in order, frames cut anywhere are put back together, a frame larger than the
link takes ends it (1009), a silent peer is dropped after twice the keepalive, and a close says why."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from meshkit import EventEnvelope
from meshkit.core import decode_pieces, envelope_from_map
from meshkit.mesh import Link, LinkClosed
from meshkit.mesh._frames import Reassembler, parse
from meshkit.mesh._tcp import FramedSocket, dial, listen, split_address
from tests.support.servers import free_port

MAX = 4 * 1024 * 1024  # the largest message these links take


@contextlib.asynccontextmanager
async def connected(keepalive: float = 0) -> AsyncIterator[tuple[FramedSocket, FramedSocket]]:
    """A framed connection over loopback: (the dialing end, the accepting end), closed afterwards."""
    accepted: asyncio.Queue[FramedSocket] = asyncio.Queue()
    done = asyncio.Event()

    async def serve(socket: FramedSocket) -> None:
        accepted.put_nowait(socket)
        await done.wait()

    server = await listen("127.0.0.1", 0, ssl=None, max_size=MAX, keepalive=keepalive, serve=serve)
    port = server.sockets[0].getsockname()[1]
    client = await dial(f"tcp://127.0.0.1:{port}", ssl=None, max_size=MAX, keepalive=keepalive)
    far = await asyncio.wait_for(accepted.get(), 5)
    try:
        yield client, far
    finally:
        done.set()
        await client.close(1000, "done")
        await far.close(1000, "done")
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the transports' own closing callbacks


@pytest.fixture
async def pair() -> AsyncIterator[tuple[FramedSocket, FramedSocket]]:
    async with connected() as ends:
        yield ends


async def test_messages_of_every_size_cross_whole_and_in_order(
    pair: tuple[FramedSocket, FramedSocket],
) -> None:
    client, server = pair
    sizes = [0, 1, 200, 64 * 1024 - 5, 64 * 1024 - 4, 64 * 1024, 200 * 1024, 3 * 1024 * 1024, 17]
    messages = [os.urandom(size) for size in sizes]
    for message in messages:
        await client.send(message)
    assert [bytes(await server.recv()) for _ in messages] == messages
    await server.send(b"back")
    assert await client.recv() == b"back"


async def test_a_close_says_why_at_the_other_end(pair: tuple[FramedSocket, FramedSocket]) -> None:
    client, server = pair
    await client.send(b"last")
    await client.close(4403, "not admitted")
    assert await server.recv() == b"last"  # what was sent before the close still arrives
    with pytest.raises(LinkClosed, match=r"closed \(4403 not admitted\)"):
        await server.recv()
    with pytest.raises(LinkClosed):
        await client.send(b"after")


async def shut(client: FramedSocket, writer: asyncio.StreamWriter, server: asyncio.Server) -> None:
    await client.close(1000, "done")
    writer.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)  # the transports' own closing callbacks


async def raw_listener(
    handle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> tuple[asyncio.Server, int]:
    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handle.put_nowait((reader, writer))

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_frames_cut_at_every_byte_are_put_back_together() -> None:
    peers: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server, port = await raw_listener(peers)
    client = await dial(f"tcp://127.0.0.1:{port}", ssl=None, max_size=MAX, keepalive=0)
    _, writer = await peers.get()
    messages = [b"a" * 3, os.urandom(70_000), b"", b"z" * 100]
    stream = b"".join(len(m).to_bytes(4, "big") + m for m in messages)
    for at in range(0, 40):  # a byte at a time through the first headers, then in odd pieces
        writer.write(stream[at : at + 1])
        await writer.drain()
        await asyncio.sleep(0)
    for at in range(40, len(stream), 4093):
        writer.write(stream[at : at + 4093])
        await writer.drain()
    assert [bytes(await client.recv()) for _ in messages] == messages
    await shut(client, writer, server)


async def test_a_frame_larger_than_the_link_takes_ends_it_with_1009() -> None:
    peers: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server, port = await raw_listener(peers)
    client = await dial(f"tcp://127.0.0.1:{port}", ssl=None, max_size=1024, keepalive=0)
    reader, writer = await peers.get()
    writer.write((1025).to_bytes(4, "big") + b"x" * 10)
    await writer.drain()
    with pytest.raises(LinkClosed, match="1009"):
        await client.recv()
    header = await asyncio.wait_for(reader.readexactly(4), 5)  # it told the peer why, then closed
    close = await reader.readexactly(int.from_bytes(header, "big") & 0x7FFF_FFFF)
    assert close[:3] == b"\x03" + (1009).to_bytes(2, "big")
    assert await reader.read() == b""
    await shut(client, writer, server)


async def test_a_peer_that_goes_silent_is_dropped_after_twice_the_keepalive() -> None:
    peers: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server, port = await raw_listener(peers)
    client = await dial(f"tcp://127.0.0.1:{port}", ssl=None, max_size=MAX, keepalive=0.2)
    reader, writer = await peers.get()
    ping = await asyncio.wait_for(reader.readexactly(5), 2)  # it pings the quiet peer
    assert ping == (0x8000_0001).to_bytes(4, "big") + b"\x01"
    started = asyncio.get_running_loop().time()
    with pytest.raises(LinkClosed, match="no frame from the peer"):
        await asyncio.wait_for(client.recv(), 5)
    waited = asyncio.get_running_loop().time() - started
    assert 0.1 < waited < 2.0, waited
    await shut(client, writer, server)


async def test_a_peer_that_answers_pings_keeps_its_link() -> None:
    async with connected(keepalive=0.1) as (client, far):
        await asyncio.sleep(0.8)  # eight keepalives, nothing but pings and pongs
        assert client.closed is None and far.closed is None
        await client.send(b"still here")
        assert await far.recv() == b"still here"


async def test_a_sender_waits_while_the_peer_does_not_read() -> None:
    peers: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server, port = await raw_listener(peers)
    client = await dial(f"tcp://127.0.0.1:{port}", ssl=None, max_size=MAX, keepalive=0)
    reader, writer = await peers.get()
    chunk = b"x" * (1024 * 1024)
    sending = asyncio.gather(*(client.send(chunk) for _ in range(64)))
    await asyncio.sleep(0.3)
    assert not sending.done()  # 64 MB does not fit the socket's buffers: the sends wait
    received = 0
    while received < 64 * (len(chunk) + 4):
        received += len(await reader.read(1 << 20))
    await asyncio.wait_for(sending, 5)
    await shut(client, writer, server)


async def test_a_reader_that_falls_behind_stops_reading_until_it_catches_up(
    pair: tuple[FramedSocket, FramedSocket],
) -> None:
    client, server = pair
    chunk = os.urandom(1024 * 1024)
    sending = asyncio.gather(*(client.send(chunk) for _ in range(48)))
    for _ in range(500):  # 16 MB waiting at the reader: it stops reading
        if server._reading_paused:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert server._reading_paused and not sending.done()  # the socket buffers filled: the sender waits
    assert 16 * 1024 * 1024 <= server._backlog_bytes < 48 * len(chunk)
    received = [await server.recv() for _ in range(48)]
    await asyncio.wait_for(sending, 5)
    assert all(message == chunk for message in received)
    assert not server._reading_paused and server._backlog_bytes == 0


async def test_a_large_message_buffer_is_reused_once_nothing_refers_to_it(
    pair: tuple[FramedSocket, FramedSocket],
) -> None:
    client, server = pair
    large = [os.urandom(200 * 1024) for _ in range(5)]
    await client.send(large[0])
    first = await server.recv()
    assert first == large[0]
    del first
    await client.send(large[1])
    assert await server.recv() == large[1]  # asking for it, the reader is done with the first
    spare = server._spares[-1]
    await client.send(large[2])
    third = await server.recv()
    assert third is spare and third == large[2]  # read into the first one's buffer
    view = memoryview(third)  # a view alive (as a segment's payload is): never reused
    del third, spare
    await client.send(large[3])
    assert await server.recv() == large[3]
    await client.send(large[4])
    assert await server.recv() == large[4]
    assert bytes(view) == large[2]  # untouched
    view.release()


async def test_segments_held_for_reassembly_keep_their_buffers(
    pair: tuple[FramedSocket, FramedSocket],
) -> None:
    """A link's events over 1 MiB cross in segments whose payloads the reassembler holds as views of their
    frames until the last arrives: those frames' buffers must not be read into again."""
    client, server = pair
    reassembler = Reassembler(16 * 1024 * 1024)
    events: list[EventEnvelope] = []

    def deliver(record: bytes, via: str) -> None:
        frame = parse(record)
        if frame["type"] == "event":  # one record: its body beside its head on the way out
            events.append(envelope_from_map(frame["event"]))
            return
        pieces = reassembler.add_pieces(frame)
        if pieces is not None:
            events.append(decode_pieces(pieces))

    def link(socket: FramedSocket, peer: str) -> Link:
        return Link(
            peer,
            socket,
            dialed=True,
            inbox="@x",
            reply_topic=lambda: None,
            deliver=deliver,
            max_event_bytes=16 * 1024 * 1024,
        )

    sender, receiver = link(client, "b"), link(server, "a")
    tasks = [asyncio.create_task(sender.run()), asyncio.create_task(receiver.run())]
    bodies = [os.urandom(3 * 1024 * 1024 + n) for n in range(3)] + [os.urandom(300 * 1024)]
    for body in bodies:
        sender.send_event(EventEnvelope("hello.world", body))
    deadline = asyncio.get_running_loop().time() + 10
    while len(events) < len(bodies):
        assert asyncio.get_running_loop().time() < deadline, len(events)
        await asyncio.sleep(0.01)
    assert [event.body for event in events] == bodies
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_connection_whose_handler_fails_is_logged_and_closed_and_the_listener_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    served: list[FramedSocket] = []

    async def serve(socket: FramedSocket) -> None:
        served.append(socket)
        if len(served) == 1:
            raise RuntimeError("a bug")
        await socket.send(b"hello")

    server = await listen("127.0.0.1", 0, ssl=None, max_size=MAX, keepalive=0, serve=serve)
    address = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    first = await dial(address, ssl=None, max_size=MAX, keepalive=0)
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(first.recv(), 5)
    assert "A direct connection from 127.0.0.1" in caplog.text and "a bug" in caplog.text
    second = await dial(address, ssl=None, max_size=MAX, keepalive=0)
    assert await asyncio.wait_for(second.recv(), 5) == b"hello"
    for framed in (first, second, *served):
        await framed.close(1000, "done")
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)


def test_an_address_is_tcp_or_tls_host_port() -> None:
    assert split_address("tcp://10.0.0.7:9000") == ("tcp", "10.0.0.7", 9000)
    assert split_address("tls://[::1]:8443") == ("tls", "::1", 8443)
    for wrong in ("ws://a:1", "tcp://a", "a:1", "tcp://:80"):
        with pytest.raises(ValueError, match="not a tcp:// or tls://"):
            split_address(wrong)


async def test_a_refused_dial_raises_for_the_caller_to_fall_back() -> None:
    with pytest.raises(OSError):
        await dial(f"tcp://127.0.0.1:{free_port()}", ssl=None, max_size=MAX, keepalive=0)
