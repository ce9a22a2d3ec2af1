"""Which carrier for a direct path between peers: one persistent multiplexed request/reply connection.

`python -m bench.carriers [--json] [--repeat 3]`: requests, replies are MsgPack maps {"id": n, "body": 200 B}
against bench/event_http.py's http floor (aiohttp, 64 keep-alive connections, FastAPI echo under uvicorn with
uvloop and httptools) posting the same maps. The others are ONE connection, multiplexed by id, to an echo in
its own process: websocket on uvicorn (each `--ws` implementation installed; client websockets.asyncio, and
aiohttp's ws_connect once), and TCP with 4-byte big-endian length frames (asyncio.Protocol, uvloop). Batched:
what one side queues within a loop turn goes as one message (a MsgPack list of encoded records), flushed by
loop.call_soon; unbatched: one message a record. The server answers in the shape it was asked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, cast

import aiohttp
import msgpack

from bench.common import IN_FLIGHT, Figure, measure, median_of, report, run_async
from bench.processes import served
from meshkit.devbroker import free_port

PAYLOAD = b"x" * 200
OCTET_STREAM = {"content-type": "application/octet-stream"}
HOST = "127.0.0.1"
THROUGHPUT_CALLS = 20_000  # not common's 5,000: at 100k req/s those take 50 ms, too few on a shared machine
Send = Callable[[bytes], Awaitable[None] | None]  # None: written at once (TCP); else to await (websocket)
Server = Callable[[], contextlib.AbstractContextManager[str]]


class Link:
    """One end's sending side: a record goes at once or into this loop turn's batch."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.outbox: list[bytes] = []
        self.sending: set[asyncio.Future[None]] = set()
        self.loop = asyncio.get_running_loop()

    def put(self, record: bytes, batch: bool) -> Awaitable[None] | None:
        if not batch:
            return self.send(record)
        if not self.outbox:
            self.loop.call_soon(self.flush)
        self.outbox.append(record)
        return None

    def flush(self) -> None:
        message, self.outbox = msgpack.packb(self.outbox), []
        sent = self.send(message)
        if sent is not None:
            task = asyncio.ensure_future(sent)
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)


def records(message: bytes) -> tuple[bool, list[dict[str, Any]]]:
    """(batched, the records) of one message."""
    unpacked = msgpack.unpackb(message)
    if isinstance(unpacked, list):
        return True, [msgpack.unpackb(record) for record in unpacked]
    return False, [unpacked]


def echo(link: Link, message: bytes) -> Awaitable[None] | None:
    """The server: each record's body back under its id, batched if the request came batched."""
    batched, received = records(message)
    for record in received:
        sent = link.put(msgpack.packb({"id": record["id"], "body": record["body"]}), batched)
    return None if batched else sent


class Caller(Link):
    """The calling end: `request` sends a record and gives the future its reply resolves."""

    def __init__(self, send: Send, batch: bool) -> None:
        super().__init__(send)
        self.batch = batch
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.ids = itertools.count()

    def request(self, body: bytes) -> Awaitable[bytes]:
        n = next(self.ids)
        reply = self.pending[n] = self.loop.create_future()
        sent = self.put(msgpack.packb({"id": n, "body": body}), self.batch)
        return reply if sent is None else self._after(sent, reply)

    async def _after(self, sent: Awaitable[None], reply: asyncio.Future[bytes]) -> bytes:
        await sent
        return await reply

    def received(self, message: bytes) -> None:
        for record in records(message)[1]:
            self.pending.pop(record["id"]).set_result(record["body"])


async def checked(name: str, call: Callable[[], Awaitable[bytes]]) -> Figure:
    if await call() != PAYLOAD:
        raise RuntimeError(f"{name}: the reply is not the payload")
    return await measure(name, len(PAYLOAD), call, throughput_calls=THROUGHPUT_CALLS)


async def ws_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """The websocket echo under uvicorn (raw ASGI); any HTTP request gets a 200, for the readiness check."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"up"})
        return
    if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    link = Link(lambda data: send({"type": "websocket.send", "bytes": data}))
    while (event := await receive())["type"] == "websocket.receive":
        sent = echo(link, event["bytes"])
        if sent is not None:
            await sent


async def multiplexed(name: str, caller: Caller, messages: AsyncIterator[bytes]) -> Figure:
    """The figure of `caller`, its replies read from `messages` meanwhile."""

    async def read() -> None:
        async for message in messages:
            caller.received(message)

    reader = asyncio.create_task(read())
    try:
        return await checked(name, lambda: caller.request(PAYLOAD))
    finally:
        reader.cancel()


async def websockets_figure(name: str, base: str, batch: bool) -> Figure:
    from websockets.asyncio.client import connect

    async with connect("ws" + base.removeprefix("http"), compression=None, proxy=None, max_size=None) as ws:
        replies = (m if isinstance(m, bytes) else m.encode() async for m in ws)
        return await multiplexed(name, Caller(ws.send, batch), replies)


async def aiohttp_ws_figure(name: str, base: str, batch: bool) -> Figure:
    async with aiohttp.ClientSession() as session, session.ws_connect(base, compress=0, max_msg_size=0) as ws:
        return await multiplexed(name, Caller(ws.send_bytes, batch), (m.data async for m in ws))


class Framed(asyncio.Protocol):
    """4-byte big-endian length, then the frame; `on_frame` gets each whole frame."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.on_frame: Callable[[bytes], object] = lambda frame: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def write(self, frame: bytes) -> None:
        self.transport.write(len(frame).to_bytes(4, "big") + frame)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4 and len(buffer) >= 4 + (size := int.from_bytes(buffer[:4], "big")):
            frame = bytes(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            self.on_frame(frame)


class EchoFramed(Framed):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        link = Link(self.write)
        self.on_frame = lambda frame: echo(link, frame)

    def data_received(self, data: bytes) -> None:
        if not self.buffer and data.startswith(b"GET "):  # the readiness check (bench/processes.py)
            self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        super().data_received(data)


async def serve_tcp(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(EchoFramed, HOST, port)
    async with server:
        await server.serve_forever()


async def tcp_figure(name: str, base: str, batch: bool) -> Figure:
    host, port = base.removeprefix("http://").split(":")
    protocol = Framed()
    transport, _ = await asyncio.get_running_loop().create_connection(lambda: protocol, host, int(port))
    caller = Caller(protocol.write, batch)
    protocol.on_frame = caller.received
    try:
        return await checked(name, lambda: caller.request(PAYLOAD))
    finally:
        transport.close()


async def floor_figure(name: str, base: str, batch: bool) -> Figure:
    ids = itertools.count()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        async def call() -> bytes:
            request = msgpack.packb({"id": next(ids), "body": PAYLOAD})
            async with session.post(base + "/echo", data=request, headers=OCTET_STREAM) as response:
                body: bytes = msgpack.unpackb(await response.read())["body"]
            return body

        return await checked(name, call)


def ws_implementations() -> list[str]:
    """uvicorn's `--ws` choices that this uvicorn has and whose library is installed."""
    from uvicorn.config import WS_PROTOCOLS

    wanted = {"websockets": "websockets", "websockets-sansio": "websockets", "wsproto": "wsproto"}
    return [ws for ws, lib in wanted.items() if ws in WS_PROTOCOLS and importlib.util.find_spec(lib)]


Client = Callable[[str, str, bool], Coroutine[Any, Any, Figure]]
Case = tuple[str, Server, Client, bool]  # name, its server, its client, batched
UVICORN = f"--host {HOST} --loop uvloop --http httptools --log-level warning --no-access-log".split()


@contextlib.contextmanager
def server(args: list[str], ready_path: str = "/") -> Iterator[str]:
    """`python -m ARGS... --port P` for the block (bench/processes.py); yields its base URL."""
    port = free_port()
    with served([*args, "--port", str(port)], f"http://{HOST}:{port}{ready_path}"):
        yield f"http://{HOST}:{port}"


def cases() -> list[Case]:
    """The http floor first: bench/event_http.py's floor server (whose own helpers import meshkit)."""

    def uvicorn(app: str, *options: str, ready: str = "/") -> Server:
        return functools.partial(server, ["uvicorn", app, *UVICORN, *options], ready)

    floor = uvicorn("bench.http_floor_app:app", "--workers", "1", ready="/echo")
    found: list[Case] = [("http floor (aiohttp, msgpack)", floor, floor_figure, False)]
    for ws in ws_implementations():
        options = ["--ws", ws, "--ws-per-message-deflate", "false", "--lifespan", "off"]
        on, label = uvicorn("bench.carriers:ws_app", *options), "ws/" + ws.removeprefix("websockets-")
        found += [
            (f"{label} batched", on, websockets_figure, True),
            (f"{label} unbatched", on, websockets_figure, False),
        ]
        if ws == "websockets-sansio":
            found.append((f"{label} aiohttp-client batched", on, aiohttp_ws_figure, True))
    tcp = functools.partial(server, ["bench.carriers", "--serve-tcp"])
    return [
        *found,
        ("framed tcp batched", tcp, tcp_figure, True),
        ("framed tcp unbatched", tcp, tcp_figure, False),
    ]


def run(repeat: int = 3) -> tuple[list[Figure], dict[str, tuple[float, float]]]:
    """`repeat` runs of every case, in turns; the medians against the floor, and each case's p50 range."""
    chosen = cases()
    runs: dict[str, list[Figure]] = {name: [] for name, *_ in chosen}
    for _ in range(repeat):
        for name, start, client, batch in chosen:
            with start() as base:
                runs[name].append(run_async(client(name, base, batch)))
    floor = median_of(runs[chosen[0][0]])
    figures = [floor] + [median_of(runs[name]).against(floor) for name, *_ in chosen[1:]]
    return figures, {
        name: (min(f.p50_ms for f in got), max(f.p50_ms for f in got)) for name, got in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.carriers", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line (BENCH.md)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (medians)")
    parser.add_argument("--serve-tcp", action="store_true", help=argparse.SUPPRESS)  # the TCP server
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_tcp:
        with contextlib.suppress(KeyboardInterrupt):
            run_async(serve_tcp(args.port))
        return 0
    figures, p50s = run(args.repeat)
    report(figures, args.json)
    if not args.json:
        print(f"uvicorn --ws implementations measured: {', '.join(ws_implementations())}")
        spread = (f"{name}: {low:.4f}-{high:.4f}" for name, (low, high) in p50s.items())
        print("p50 ms range over the runs:\n  " + "\n  ".join(spread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
