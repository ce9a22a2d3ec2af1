"""TLS: the server side of `meshkit run` (HTTPS/WSS, mutual TLS) and one client context for every wss:// and
https:// peer and monitor an app reaches (the presence websocket, the direct path, Event over HTTP).

Server keys: `server.ssl.certfile`, `server.ssl.keyfile` (`server.ssl.keyfile.password`), and for mutual TLS
`server.ssl.client.auth` (none, optional, required) with `server.ssl.ca`. Client keys: `tls.ca` (the CA
bundle to trust; default: the system's), `tls.certfile` and `tls.keyfile` (`tls.keyfile.password`): this
app's certificate, presented when a server asks for one. A file that cannot be read is a ConfigError naming
the key and the path.
"""

from __future__ import annotations

import errno
import ssl
from pathlib import Path
from typing import Any

from meshkit.config import AppConfig, ConfigError

CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
SECURE_SCHEMES = ("wss://", "https://")

# what OpenSSL's alert names mean to whoever reads the log
_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate (set tls.certfile)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the handshake (a client certificate missing?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust this app's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused this app's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server refused this app's certificate",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on that port",
}


def _readable(config: AppConfig, key: str) -> str | None:
    """The path under `key`, checked to be a readable file; None when the key is unset."""
    value = (config.get(key) or "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {value}: {exc.strerror or exc}") from None
    return str(path)


def _load_chain(
    context: ssl.SSLContext,
    keys: tuple[str, str, str],
    certfile: str,
    keyfile: str | None,
    password: str | None,
) -> None:
    try:
        context.load_cert_chain(certfile, keyfile, password or None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        where = certfile if keyfile is None else f"{certfile} with {keyfile}"
        named = f"{keys[0]}/{keys[1]}" if keyfile else keys[0]
        raise ConfigError(f"{named}: cannot load {where}: {_reason(exc)}") from None


def _load_ca(context: ssl.SSLContext, key: str, cafile: str) -> None:
    try:
        context.load_verify_locations(cafile=cafile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot load {cafile} as a CA bundle: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc.args[-1] if exc.args else exc)


class ClientTLS:
    """The SSL context for this app's wss:// and https:// connections, from `tls.*` (checked at once);
    without a config, the system's CAs and no client certificate."""

    def __init__(self, config: AppConfig | None = None) -> None:
        config = config or AppConfig({}, {}, {}, {})
        self.ca = _readable(config, "tls.ca")
        self.certfile = _readable(config, "tls.certfile")
        self.keyfile = _readable(config, "tls.keyfile")
        if self.keyfile and not self.certfile:
            raise ConfigError("tls.keyfile is set without tls.certfile")
        self._password = config.get("tls.keyfile.password")
        self._context: ssl.SSLContext | None = None
        if self.configured:
            self._context = self._build()  # a bad file is found at start, not at the first connection

    @property
    def configured(self) -> bool:
        """True when a `tls.*` key is set: without one, clients keep their library's defaults."""
        return bool(self.ca or self.certfile)

    @property
    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = self._build()
        return self._context

    def for_url(self, url: str) -> ssl.SSLContext | None:
        """The context for `url` when it is wss:// or https://, else None (a plain connection)."""
        return self.context if url.lower().startswith(SECURE_SCHEMES) else None

    def _build(self) -> ssl.SSLContext:
        if self.ca:  # this CA only, host names checked: a peer's certificate from elsewhere is refused
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _load_ca(context, "tls.ca", self.ca)
        else:
            context = ssl.create_default_context()  # the system's CAs
        if self.certfile:
            keys = ("tls.certfile", "tls.keyfile", "tls.keyfile.password")
            _load_chain(context, keys, self.certfile, self.keyfile, self._password)
        return context

    def describe_failure(self, exc: BaseException, url: str) -> str | None:
        """Why opening a connection to `url` failed, when it was TLS, with what this app trusts or
        presents; else None."""
        reason = tls_failure(exc)
        if reason is None and url.lower().startswith(SECURE_SCHEMES) and _cut_short(exc):
            # a server refusing a client certificate after a TLS 1.3 handshake just drops the connection
            closed = "the server closed the connection before answering"
            if self.certfile:
                return f"{closed}: it may not trust this app's certificate tls.certfile={self.certfile}"
            return f"{closed}: it may require a client certificate (tls.certfile is not set)"
        if reason is not None and "verify failed" in reason:
            reason += f" (trusting {f'tls.ca={self.ca}' if self.ca else 'the system CAs'})"
        return reason


def _cut_short(exc: BaseException) -> bool:
    """True when the connection ended before any answer (EOF, reset): what a refused handshake looks like."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EOFError | ConnectionResetError | BrokenPipeError):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ECONNRESET, errno.EPIPE):
            return True
        if type(current).__name__ == "ServerDisconnectedError":  # aiohttp's, not imported here
            return True
        current = current.__cause__ or current.__context__
    return False


def tls_failure(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, in words, when `exc` or what caused it is a TLS failure; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # aiohttp's errors are SSL errors themselves, and keep the real one aside
        aside = getattr(current, "certificate_error", None) or getattr(current, "os_error", None)
        if isinstance(aside, BaseException):
            current = aside
            continue
        if isinstance(current, ssl.SSLCertVerificationError):
            why = getattr(current, "verify_message", None) or getattr(current, "reason", None)
            return f"certificate verify failed: {why or current}"
        if isinstance(current, ssl.SSLError):
            reason = str(current.reason or "")
            return _ALERTS.get(reason, f"TLS failed: {_reason(current)}")
        current = current.__cause__ or current.__context__
    return None


def server_tls(config: AppConfig) -> dict[str, Any]:
    """uvicorn's ssl_* settings from `server.ssl.*` ({} to serve plain HTTP), every file checked."""
    certfile = _readable(config, "server.ssl.certfile")
    keyfile = _readable(config, "server.ssl.keyfile")
    ca = _readable(config, "server.ssl.ca")
    auth = (config.get("server.ssl.client.auth") or "none").strip().lower()
    if auth not in CLIENT_AUTH:
        raise ConfigError(f"server.ssl.client.auth must be none, optional or required, not {auth!r}")
    if certfile is None:
        if keyfile or auth != "none":
            raise ConfigError("server.ssl.keyfile and server.ssl.client.auth need server.ssl.certfile")
        return {}
    if auth != "none" and ca is None:
        raise ConfigError(f"server.ssl.client.auth={auth} needs server.ssl.ca (the client certificates' CA)")
    password = config.get("server.ssl.keyfile.password")
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # what uvicorn will load, loaded once here to check it
    keys = ("server.ssl.certfile", "server.ssl.keyfile", "server.ssl.keyfile.password")
    _load_chain(check, keys, certfile, keyfile, password)
    if ca is not None:
        _load_ca(check, "server.ssl.ca", ca)
    return {
        "ssl_certfile": certfile,
        "ssl_keyfile": keyfile,
        "ssl_keyfile_password": password or None,
        "ssl_cert_reqs": CLIENT_AUTH[auth],
        "ssl_ca_certs": ca,
    }


def serves_tls(config: AppConfig) -> bool:
    """True when `meshkit run` serves this app over HTTPS/WSS (`server.ssl.certfile` is set)."""
    return bool((config.get("server.ssl.certfile") or "").strip())


def server_context(config: AppConfig) -> ssl.SSLContext | None:
    """The server side's SSL context from `server.ssl.*` (as uvicorn loads it), or None without TLS: for
    what this app serves besides HTTP (the direct path's framed TCP)."""
    settings = server_tls(config)
    if not settings:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        settings["ssl_certfile"], settings["ssl_keyfile"], settings["ssl_keyfile_password"]
    )
    context.verify_mode = settings["ssl_cert_reqs"]
    if settings["ssl_ca_certs"]:
        context.load_verify_locations(settings["ssl_ca_certs"])
    return context
