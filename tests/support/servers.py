"""Real servers for tests: an app under ``meshkit run`` (or plain uvicorn) in a process of its own.

    with UvicornProcess("tests.apps.http_target:app", properties={"max.event.size": "4096"}) as server:
        urllib.request.urlopen(server.url + "/info")
        server.wait_for_log("refused with 400")

The process runs from the repository root (or ``root``) with ``PYTHONPATH`` set to it. It listens on
127.0.0.1 only and writes its stdout and stderr to a temporary log file (read it with
:meth:`UvicornProcess.log_text`).
Starting waits until ``GET /livenessprobe`` answers; a server that exits or does not answer in time raises
:class:`ServerError` with the tail of its log. With ``server.ssl.certfile`` among the properties the server
speaks HTTPS: ``url`` is ``https://...``, and the readiness check uses ``ssl_context`` (by default one that
verifies nothing, enough to see the server answer; give one with a client certificate for mutual TLS).
"""

from __future__ import annotations

import atexit
import http.client
import os
import signal as signals
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from meshkit import devbroker
from tests.support.eventually import wait_until

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to, outside the range bind(0) takes from (see
    meshkit.devbroker.free_port): no app's own listener or connection takes it before its server binds it."""
    return devbroker.free_port(HOST)


class ServerError(RuntimeError):
    """The server did not start, or did not stop when asked."""


class UvicornProcess:
    """``python -m meshkit.cli run APP --port P -Dkey=value...`` (or ``-m uvicorn`` with ``cli=False``).

    A context manager: started on enter, stopped (SIGTERM, then SIGKILL after ``stop_timeout``) on exit.
    """

    def __init__(
        self,
        app: str,
        *,
        port: int | None = None,
        properties: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        cli: bool = True,
        extra_args: Sequence[str] = (),
        ready_path: str = "/livenessprobe",
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        root: Path = REPO,
    ) -> None:
        """`root`: the tree it runs from (its working directory and PYTHONPATH), this repository by default;
        another for an older meshkit (tests.support.older)."""
        self.app = app
        self.root = root
        self.port = port or free_port()
        self.properties = dict(properties or {})
        self.env = dict(env or {})
        self.cli = cli
        self.extra_args = list(extra_args)
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.tls = bool(self.properties.get("server.ssl.certfile"))
        self.ssl_context = ssl_context
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._final_log: str | None = None

    # -- what a test uses -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` when it serves TLS; no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def event_url(self) -> str:
        """The Event over HTTP endpoint, ``http://127.0.0.1:PORT/api/event``."""
        return f"{self.url}/api/event"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def command(self) -> list[str]:
        if self.cli:
            head = [sys.executable, "-m", "meshkit.cli", "run", self.app]
        else:
            head = [sys.executable, "-m", "uvicorn", self.app]
        defines = [f"-D{key}={value}" for key, value in self.properties.items()]
        return [*head, "--host", HOST, "--port", str(self.port), *defines, *self.extra_args]

    def log_text(self) -> str:
        """Everything the server wrote so far (stdout and stderr interleaved)."""
        if self._log_path is not None and self._log_path.exists():
            return self._log_path.read_bytes().decode("utf-8", "replace")
        return self._final_log or ""

    def log_tail(self, chars: int = _TAIL_CHARS) -> str:
        return self.log_text()[-chars:].strip() or "(no output)"

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """Poll the log until it contains ``text``; return the first line holding it."""
        return wait_until(
            lambda: next((line for line in self.log_text().splitlines() if text in line), None),
            timeout=timeout,
            what=f"{text!r} in the log of {self.app}",
            describe=self.log_tail,
        )

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> UvicornProcess:
        if self._process is not None:
            raise ServerError(f"{self.app} on port {self.port} is already started")
        env = {**os.environ, **self.env, "PYTHONPATH": str(self.root), "PYTHONUNBUFFERED": "1"}
        fd, name = tempfile.mkstemp(prefix="meshkit-server-", suffix=".log")
        self._log_path, self._final_log = Path(name), None
        with os.fdopen(fd, "wb") as out:
            # a session of its own: a Ctrl-C meant for pytest must not kill it before the teardown
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(signals.SIGKILL)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.returncode
            if code is not None:
                raise ServerError(f"{self.app} exited with code {code} while starting:\n{self.log_tail()}")
            if _answers(self.url + self.ready_path, self.ssl_context):
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.app} did not answer {self.ready_path} on port {self.port} "
                    f"within {self.startup_timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, signal: signals.Signals = signals.SIGTERM) -> int | None:
        """Send ``signal`` and wait for the exit (SIGKILL after ``stop_timeout``); return the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_path is not None:
            self._final_log = self.log_text()
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
        return process.returncode

    def __enter__(self) -> UvicornProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never via a proxy


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # readiness only: the tests check the certificates themselves
    return context


def _answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when an HTTP server answers ``url`` at all (any status)."""
    if url.startswith("https://"):
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context or _unverified())
        )
    else:
        opener = _DIRECT
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    except http.client.HTTPException as exc:  # not the server we started: another process holds the port
        raise ServerError(f"{url}: what answers there does not speak HTTP ({exc!r})") from exc
