"""A TCP relay on 127.0.0.1 that a test can break: the network between two processes, made faulty.

    with TcpProxy(target_port) as proxy:      # listens on proxy.port, relays to 127.0.0.1:target_port
        ...
        proxy.cut()                           # every open connection reset (RST) both ways, now
        proxy.refuse = True                   # new connections are reset at once, until set back

Threads, one pair per connection: the relay must not share an event loop with the test's clients.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

from tests.support.servers import free_port

HOST = "127.0.0.1"
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() then sends RST, not FIN


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        # wakes a pump blocked in recv (Linux sends nothing for it): until then its recv holds the socket
        # open and close() could not reset it
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self.refuse = False
        self.connections = 0  # accepted so far
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"proxy:{self.port}")

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, source, sink), daemon=True).start()

    def _pump(
        self, pair: tuple[socket.socket, socket.socket], source: socket.socket, sink: socket.socket
    ) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):  # one side ended: so does the other; the second pump closes nothing new
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._lock:  # no longer open: `cut` counts only the connections still open
            if pair in self._pairs:
                self._pairs.remove(pair)

    @property
    def open(self) -> int:
        """Connections relayed now (accepted, and neither end has closed)."""
        with self._lock:
            return len(self._pairs)

    def cut(self) -> int:
        """Reset every open connection, both ends; returns how many there were (ended ones do not count)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SilentPort:
    """A port that takes TCP connections (the kernel completes them) and never says a word."""

    def __init__(self) -> None:
        self._listener = socket.create_server((HOST, 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> SilentPort:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (connecting to it is refused)."""
    return free_port()
