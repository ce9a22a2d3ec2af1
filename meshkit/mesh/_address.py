"""Where peers reach an app's direct path: the address its join says, and where framed TCP listens
(docs/protocol/direct.md#the-address)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket as sockets

from meshkit.config import AppConfig, ConfigError
from meshkit.security import serves_tls

PATH = "/api/mesh/direct"  # the websocket carrier's path on the app's HTTP port


def direct_address(config: AppConfig) -> str | None:
    """The address peers reach this app's direct path at; None with `mesh.transport=broker` (the default).

    `mesh.direct.address`: a `ws://` or `wss://` URL takes the websocket on the app's HTTP port; host:port
    (or `tcp://`, `tls://` host:port) takes framed TCP (meshkit/mesh/_tcp.py), tls:// when the app serves TLS
    (`server.ssl.certfile`). Unset: framed TCP at `server.host` (this host's own address for 0.0.0.0) and
    `mesh.direct.port`, whose default 0 is the port the listener gets (an address ending :0 until then).
    """
    transport = (config.get("mesh.transport", "broker") or "broker").strip().lower()
    if transport not in ("broker", "direct"):
        raise ConfigError(f"mesh.transport must be broker or direct, not {transport!r}")
    if transport == "broker":
        return None
    address = (config.get("mesh.direct.address") or "").strip()
    framed = "tls" if serves_tls(config) else "tcp"
    if not address:
        host = (config.get("server.host") or "127.0.0.1").strip()
        if host in ("0.0.0.0", "::", ""):  # every interface: peers need one of them
            host = sockets.gethostbyname(sockets.gethostname())
        address = f"{host}:{_port(config, 'mesh.direct.port', 0)}"
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if address.startswith(http):
            address = ws + address[len(http) :]
    if address.startswith(("ws://", "wss://")):
        if "/" not in address.partition("://")[2]:
            address += PATH
        return address
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = framed, address
    host, _, port = rest.rstrip("/").rpartition(":")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host.strip("[]")).version == 6 and not host.startswith("["):
            host = f"[{host}]"
    if scheme not in ("tcp", "tls") or not host or not port.isdigit():
        raise ConfigError(
            "mesh.direct.address must be host:port, a tcp:// or tls:// host:port, or a ws:// URL, "
            f"not {address!r}"
        )
    return f"{scheme}://{host}:{port}"


def direct_listener(config: AppConfig) -> tuple[str, int] | None:
    """Where this app takes framed TCP links, (host, port); None unless its direct address is framed TCP.

    The host is `mesh.direct.host`, by default `server.host` (127.0.0.1 without one); the port is
    `mesh.direct.port`, by default the port of `mesh.direct.address` (0 without one: any free port).
    """
    address = direct_address(config)
    if address is None or not address.startswith(("tcp://", "tls://")):
        return None
    host = (config.get("mesh.direct.host") or config.get("server.host") or "127.0.0.1").strip()
    default = int(address.rpartition(":")[2]) if (config.get("mesh.direct.address") or "").strip() else 0
    return host.strip("[]"), _port(config, "mesh.direct.port", default)


def _port(config: AppConfig, key: str, default: int) -> int:
    port = config.get_int(key, default)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key} must be a port number (0-65535), not {port}")
    return port
