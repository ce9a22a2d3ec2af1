"""What the operator commands share: exit codes, failures, URLs, the mesh key, HTTP GETs and tables."""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

OK = 0  # a 2xx reply; the document was read
ERROR_REPLY = 1  # the reply is an error (status >= 400, a timeout is 408)
USAGE = 2  # a bad command line: arguments, --body JSON, URLs
UNREACHABLE = 3  # no HTTP answer: connection refused, DNS, timeout, TLS
KEY_REFUSED = 4  # the server refused the mesh key (HTTP 401; 403 for a GET)
NOT_MESHKIT = 5  # an HTTP answer, but not meshkit's: 404 for the path, not an envelope, not JSON

EXIT_CODES = """\
exit codes:
  0  a 2xx reply (call); the document was read (routes, mesh)
  1  an error reply: its status and message on stderr (404 unknown route, 403 private, 408 timeout, ...)
  2  a bad command line (arguments, --body that is not JSON, a URL that is not http(s))
  3  cannot reach the URL (connection refused, DNS, timeout)
  4  the mesh key was refused (pass --key or set MESH_API_KEY)
  5  the URL answered, but not as meshkit does (404 for the path, no event envelope, not JSON)"""

KEY_ENV = "MESH_API_KEY"
DEFAULT_TIMEOUT = 10.0


class CliFailure(Exception):
    """A command failed: its exit code and the one line printed to stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail(code: int, message: str) -> NoReturn:
    raise CliFailure(code, message)


def key_refused(url: str, key: str | None) -> CliFailure:
    hint = "none was given" if key is None else "the key given is not accepted"
    return CliFailure(KEY_REFUSED, f"{url}: the mesh key was refused: pass --key or set {KEY_ENV} ({hint})")


def mesh_key(given: str | None) -> str | None:
    """``--key``, else ``$MESH_API_KEY``; None when neither (or an empty one) is set."""
    key = given if given is not None else os.environ.get(KEY_ENV)
    return key or None


# -- arguments ----------------------------------------------------------------------------------------------
def http_url(text: str) -> str:
    """An http(s) URL: ``http://`` is added when no scheme is given; ``ws``/``wss`` become ``http(s)``."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    try:
        port = parts.port  # a bad port raises here
    except ValueError:
        port = -1
    if scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def with_path(url: str, path: str, strip: Sequence[str] = ()) -> str:
    """``url`` with ``path`` (e.g. ``/info/routes``) after its own path, unless it ends with it already;
    a trailing one of ``strip`` goes first (a monitor's ``/ws/presence``)."""
    parts = urlsplit(url)
    base = parts.path.rstrip("/")
    for tail in strip:
        if base.endswith(tail):
            base = base[: -len(tail)]
    if not base.endswith(path):
        base += path
    return urlunsplit((parts.scheme, parts.netloc, base, parts.query, ""))


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and at most a day, got {text!r}")
    return value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=seconds, default=DEFAULT_TIMEOUT, metavar="S", help="seconds (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    parser.add_argument(
        "--key", default=None, metavar="KEY", help=f"the mesh key, sent as x-mesh-key (default ${KEY_ENV})"
    )
    tls = parser.add_argument_group("TLS (https:// and wss:// URLs)")
    tls.add_argument(
        "--cacert", metavar="PATH", help="the CA bundle to trust (default $TLS_CA, else the system's)"
    )
    tls.add_argument("--cert", metavar="PATH", help="a client certificate to present (default $TLS_CERTFILE)")
    tls.add_argument("--cert-key", metavar="PATH", help="its private key (default $TLS_KEYFILE)")


def tls_settings(args: argparse.Namespace) -> dict[str, str]:
    """The `tls.*` settings (meshkit.security.ClientTLS): --cacert, --cert, --cert-key, or TLS_* variables."""
    chosen = {
        "tls.ca": args.cacert or os.environ.get("TLS_CA"),
        "tls.certfile": args.cert or os.environ.get("TLS_CERTFILE"),
        "tls.keyfile": args.cert_key or os.environ.get("TLS_KEYFILE"),
    }
    return {key: value for key, value in chosen.items() if value}


def client_tls(settings: dict[str, str]) -> Any:
    """The SSL context for aiohttp from `settings` (True: aiohttp's default); a bad file exits 2."""
    from meshkit.config import AppConfig, ConfigError
    from meshkit.security import ClientTLS

    try:
        tls = ClientTLS(AppConfig.load(argv=[], environ={}, overrides=settings))
    except ConfigError as exc:
        fail(USAGE, str(exc))
    return tls.context if tls.configured else True


# -- HTTP ---------------------------------------------------------------------------------------------------
def unreachable_reason(exc: BaseException, timeout: float) -> str:
    """Why no HTTP answer came, in a few words: ``connection refused``, ``name not resolved``, ..."""
    import aiohttp

    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"name not resolved ({exc.host})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return f"name not resolved ({exc.host})"
        if isinstance(error, TimeoutError):
            return f"timed out after {timeout:g} s"
        return (error.strerror or str(error)).lower() if isinstance(error, OSError) else str(error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__


async def get_json(
    url: str, key: str | None, timeout: float, what: str, tls: dict[str, str] | None = None
) -> Any:
    """GET ``url`` and return its JSON; a failure raises :class:`CliFailure` with its exit code.

    ``what`` names the expected server in the 404 message (``a meshkit app``, ``a presence monitor``).
    """
    import aiohttp

    from meshkit.security import KEY_HEADER

    headers = {"accept": "application/json", **({KEY_HEADER: key} if key else {})}
    connector = aiohttp.TCPConnector(ssl=client_tls(tls or {}))
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), connector=connector
        ) as session:
            async with session.get(url, headers=headers) as response:
                status, data = response.status, await response.read()
                content_type = response.content_type
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        fail(UNREACHABLE, f"cannot reach {url}: {unreachable_reason(exc, timeout)}")
    if status in (401, 403):
        raise key_refused(url, key)
    if status == 404:
        fail(NOT_MESHKIT, f"{url}: not found (HTTP 404): is this {what}?")
    try:
        document = json.loads(data)
    except ValueError:
        fail(NOT_MESHKIT, f"{url}: the answer is not JSON (HTTP {status}, {content_type}): is this {what}?")
    if status >= 400:
        detail = document.get("detail", document) if isinstance(document, dict) else document
        fail(ERROR_REPLY, f"{url} answered HTTP {status}: {detail}")
    return document


# -- output -------------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def to_json(value: Any) -> str:
    """Indented JSON; bytes as base64 text, anything else JSON has no type for as its text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)


def count(n: int, noun: str) -> str:
    """``1 app``, ``2 apps``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def table(headings: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; an empty cell is ``-``."""
    cells = [[str(c) if c not in (None, "") else "-" for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headings)]
    lines = [headings, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
