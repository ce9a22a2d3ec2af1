"""``meshkit call ROUTE``: one request over Event over HTTP, sent by the PostOffice through meshkit's own
client (``PostOffice.request(..., endpoint=...)``), and its reply printed."""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from meshkit.cli._common import (
    DEFAULT_TIMEOUT,
    ERROR_REPLY,
    EXIT_CODES,
    NOT_MESHKIT,
    OK,
    UNREACHABLE,
    USAGE,
    CliFailure,
    add_connection_options,
    fail,
    http_url,
    key_refused,
    mesh_key,
    tls_settings,
    to_json,
    unreachable_reason,
    with_path,
)

if TYPE_CHECKING:
    from meshkit.core import EventEnvelope

DEFAULT_ENDPOINT = "http://127.0.0.1:8080/api/event"
ENDPOINT_ENV = "MESHKIT_ENDPOINT"
CLIENT_NAME = "meshkit-cli"  # the `from` of the request

_NO_BODY = object()

EXAMPLES = """\
examples:
  meshkit call hello.world --body '{"name": "Ann"}' --header id=7 --endpoint http://127.0.0.1:8085
  MESHKIT_ENDPOINT=http://127.0.0.1:8085/api/event meshkit call hello.pojo --json --body @pojo.json
  echo '[1, 2]' | meshkit call hello.world --body - --key "$(cat mesh.key)"
"""


@dataclass(frozen=True)
class CallOptions:
    """What ``meshkit call`` was asked to do."""

    route: str
    endpoint: str = DEFAULT_ENDPOINT
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False
    key: str | None = None
    tls: dict[str, str] = field(default_factory=dict)  # tls.* for https:// endpoints (--cacert, TLS_CA, ...)


def _route(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"not a route name: {text!r}")
    return text


def _body(text: str) -> Any:
    """JSON from the argument, from a file (``@FILE``) or from stdin (``-``)."""
    source = "stdin" if text == "-" else text[1:] if text.startswith("@") else None
    if source is not None:
        try:
            text = sys.stdin.read() if text == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        where = f" in {source}" if source is not None else ""
        raise argparse.ArgumentTypeError(f"not valid JSON{where}: {exc}") from None


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name.strip(), value


def endpoint_url(text: str) -> str:
    """An Event-over-HTTP URL; a bare ``http://host:port`` gets ``/api/event``."""
    url = http_url(text)
    return with_path(url, "/api/event") if urlsplit(url).path in ("", "/") else url


def add_call(commands: Any) -> None:
    """The ``call`` subcommand on ``commands`` (argparse's subparsers action)."""
    call = commands.add_parser(
        "call",
        help="send one request over Event over HTTP and print the reply",
        description=(
            "Send one request to ROUTE at an app's POST /api/event (Event over HTTP) and print the reply: "
            "its body on stdout (JSON indented, text as it is) and its status on stderr."
        ),
        epilog=f"{EXIT_CODES}\n\n{EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("route", type=_route, metavar="ROUTE", help="e.g. hello.world")
    call.add_argument(
        "--body",
        type=_body,
        default=_NO_BODY,
        metavar="JSON",
        help="the request body as JSON; @FILE reads it from a file, - from stdin (default: no body)",
    )
    call.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an event header (repeatable)",
    )
    call.add_argument(
        "--endpoint",
        type=endpoint_url,
        default=None,
        metavar="URL",
        help=f"the app's Event-over-HTTP URL (default ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT})",
    )
    add_connection_options(call)


def call_options(args: argparse.Namespace) -> CallOptions:
    endpoint = args.endpoint
    if endpoint is None:
        try:
            endpoint = endpoint_url(os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT)
        except argparse.ArgumentTypeError as exc:
            fail(USAGE, f"{ENDPOINT_ENV}: {exc}")
    body = None if args.body is _NO_BODY else args.body
    return CallOptions(
        args.route, endpoint, body, dict(args.header), args.timeout, args.json, args.key, tls_settings(args)
    )


async def request(options: CallOptions, key: str | None) -> tuple[EventEnvelope, bool, float]:
    """The reply, whether it is the server's refusal (an HTTP status other than 200) rather than the
    function's own reply, and the milliseconds it took; no answer at all raises :class:`CliFailure`."""
    import aiohttp  # noqa: F401  (the client loads it on first use: here, before the clock starts)

    from meshkit.config import AppConfig, ConfigError
    from meshkit.core import AppError, CodecError, EventEnvelope, Platform, PostOffice
    from meshkit.http import EventOverHttp

    overrides = {"application.name": CLIENT_NAME, **({"mesh.api.key": key} if key else {}), **options.tls}
    config = AppConfig.load(argv=[], environ={}, overrides=overrides)  # the client presents the mesh key
    platform = Platform(config, name=CLIENT_NAME, functions=[])
    try:
        client = platform.event_client = EventOverHttp(platform)
    except ConfigError as exc:  # an unreadable --cacert or --cert
        fail(USAGE, str(exc))
    started = time.perf_counter()
    try:
        reply = await PostOffice(platform).request(
            options.route,
            options.body,
            options.headers,
            timeout=options.timeout,
            endpoint=options.endpoint,
            timeout_as_reply=True,
        )
        return reply, False, (time.perf_counter() - started) * 1000
    # the client's refusals: raised from an aiohttp error (no answer), a codec error, or for an HTTP status
    except AppError as exc:
        cause = exc.__cause__
        if isinstance(cause, CodecError):
            fail(NOT_MESHKIT, f"{options.endpoint}: no event envelope in the answer: is this a meshkit app?")
        if cause is not None:
            fail(
                UNREACHABLE, f"cannot reach {options.endpoint}: {unreachable_reason(cause, options.timeout)}"
            )
        return EventEnvelope(status=exc.status, body=exc.message), True, 0.0
    finally:
        await client.close()


def _phrase(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _print_body(body: Any) -> None:
    if body is None:
        return
    if isinstance(body, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    text = body if isinstance(body, str) else to_json(body)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def error_line(options: CallOptions, reply: EventEnvelope) -> str:
    """``404 Not Found for ROUTE at URL: Route ROUTE not found`` (route and URL only when not said)."""
    body = reply.body
    message = body if isinstance(body, str) else json.dumps(body, default=str)
    where = "" if options.route in message else f" for {options.route}"
    where += "" if options.endpoint in message else f" at {options.endpoint}"
    return f"{_phrase(reply.status)}{where}: {message}"


def call(options: CallOptions) -> int:
    from meshkit.core import envelope_to_map

    key = mesh_key(options.key)
    reply, refused, took = asyncio.run(request(options, key))
    if options.json:
        print(to_json(envelope_to_map(reply)))
    if 200 <= reply.status < 300:
        if not options.json:
            _print_body(reply.body)
            ran = f", ran {reply.exec_time:.3f} ms" if reply.exec_time is not None else ""
            print(f"{_phrase(reply.status)} ({options.route}{ran}, {took:.1f} ms in all)", file=sys.stderr)
        return OK
    if refused and reply.status == 401:
        raise key_refused(options.endpoint, key)
    raise CliFailure(ERROR_REPLY, error_line(options, reply))
