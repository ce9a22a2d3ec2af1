"""Client settings: `hazelcast.*` properties in, a `hazelcast.config.Config` out, plus meshkit's defaults.

Every `hazelcast.<option>` property names an option of the Python client's `Config` (dots and dashes read as
underscores: `hazelcast.cluster.members` is `cluster_members`, `hazelcast.ssl.enabled` is `ssl_enabled`,
`hazelcast.creds_username` is `creds_username`), so timeouts, TLS and credentials pass straight through.
Options that are objects rather than values (serializers, listeners, load balancers, near caches) cannot come
from properties and are refused, as are the ones meshkit manages itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hazelcast.config import Config, ReconnectMode

from meshkit.config import AppConfig, ConfigError

log = logging.getLogger(__name__)

PREFIX = "hazelcast."
DEFAULT_MEMBERS = "127.0.0.1:5701"
DEFAULT_CLUSTER_NAME = "dev"
# Same ceiling as the Kafka and in-memory connectors: envelopes are segmented at 64 KB above the connector.
MAX_RECORD_BYTES = 4 * 1024 * 1024
# How long start() waits for a first member when `cluster_connect_timeout` is not set.
DEFAULT_CONNECT_SECONDS = 10.0
# Records a reliable topic listener reads per request; the member's ringbuffer capacity must not be smaller.
DEFAULT_READ_BATCH_SIZE = 64

# meshkit's defaults where the user set nothing (as the Kafka connector does with message.timeout.ms).
CLIENT_DEFAULTS: dict[str, str] = {
    # A publish or lookup gives up after 30 s of retrying (the client's default is 120 s).
    "invocation_timeout": "30",
    # Invocations wait while the client reconnects in the background; see _check_reconnect_mode.
    "reconnect_mode": "ON",
}

# Options of the connector itself, not of the client's Config.
CONNECTOR_OPTIONS = frozenset({"read_batch_size"})

# Config options that meshkit sets itself: a property cannot replace them.
_MANAGED = frozenset({"async_start", "lifecycle_listeners", "membership_listeners", "reliable_topics"})
_LIST_OPTIONS = frozenset({"cluster_members", "labels"})
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def option_name(key: str) -> str:
    """`cluster.members` or `cluster-members` -> `cluster_members` (the client's Config attribute)."""
    return key.strip().lower().replace(".", "_").replace("-", "_")


def hazelcast_settings(config: AppConfig) -> dict[str, str]:
    """Every `hazelcast.*` property, keyed by client option name, with the members and cluster name set.

    `hazelcast.cluster.members` is a comma list of host:port (default 127.0.0.1:5701) and
    `hazelcast.cluster.name` the cluster name (default "dev"); environment variables count for those two
    (HAZELCAST_CLUSTER_MEMBERS, HAZELCAST_CLUSTER_NAME).
    """
    settings: dict[str, str] = {}
    for key in config.keys():
        if key.startswith(PREFIX):
            settings[option_name(key[len(PREFIX) :])] = config.get(key) or ""
    for key in ("hazelcast.cluster.members", "hazelcast.cluster.name"):
        value = config.get(key)
        if value:
            settings[option_name(key[len(PREFIX) :])] = value
    if not settings.get("cluster_members", "").strip():
        settings["cluster_members"] = DEFAULT_MEMBERS
    if not settings.get("cluster_name", "").strip():
        settings["cluster_name"] = DEFAULT_CLUSTER_NAME
    return settings


def normalized(settings: Mapping[str, str]) -> dict[str, str]:
    """Settings keyed by client option name, whichever spelling they came in."""
    return {option_name(k): str(v) for k, v in settings.items()}


def members_of(settings: Mapping[str, str]) -> list[str]:
    raw = normalized(settings).get("cluster_members") or DEFAULT_MEMBERS
    return [m.strip() for m in raw.split(",") if m.strip()] or [DEFAULT_MEMBERS]


def connect_timeout_of(settings: Mapping[str, str], default: float = DEFAULT_CONNECT_SECONDS) -> float:
    """How long start() waits: `cluster_connect_timeout` when set to a positive number, else `default`."""
    normal = normalized(settings)
    raw = normal.get("cluster_connect_timeout")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"hazelcast.cluster_connect_timeout={raw!r}: expected a number of seconds"
        ) from None
    return value if value > 0 else default


def read_batch_size_of(settings: Mapping[str, str]) -> int:
    normal = normalized(settings)
    raw = normal.get("read_batch_size")
    if raw is None:
        return DEFAULT_READ_BATCH_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value < 1000:
        raise ConfigError(f"hazelcast.read_batch_size={raw!r}: expected an integer from 1 to 999")
    return value


def _convert(name: str, raw: str, default: Any) -> Any:
    """A property's text as the type the client's option has by default."""
    text = raw.strip()
    if name in _LIST_OPTIONS:
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(default, bool):
        word = text.lower()
        if word not in _TRUE and word not in _FALSE:
            raise ValueError("expected true or false")
        return word in _TRUE
    if isinstance(default, int):
        # Numbers (cluster_connect_timeout's default is the int -1) or enum options (reconnect_mode,
        # ssl_protocol, default_int_type), which take a number or a name.
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                pass
        return text
    if isinstance(default, float):
        return float(text)
    if default is None or isinstance(default, str):
        return text
    raise ValueError("this option takes objects, not a value: configure it in code")


def client_config(settings: Mapping[str, str]) -> Config:
    """A client Config from connector settings; a bad or unknown option is a ConfigError naming it."""
    normal = normalized(settings)
    for key, value in CLIENT_DEFAULTS.items():
        normal.setdefault(key, value)
    normal.setdefault("cluster_members", DEFAULT_MEMBERS)
    config = Config.from_dict({})
    for name, raw in sorted(normal.items()):
        if name in CONNECTOR_OPTIONS:
            continue
        key = f"{PREFIX}{name}"
        if name in _MANAGED:
            raise ConfigError(f"{key}: set by meshkit, not configurable")
        if not isinstance(getattr(Config, name, None), property):
            raise ConfigError(
                f"{key}: not an option of the Hazelcast Python client (hazelcast.config.Config)"
            )
        try:
            _set(config, name, _convert(name, str(raw), getattr(config, name)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}={raw!r}: {exc}") from None
    _check_reconnect_mode(config)
    read_batch_size_of(normal)  # checked here so a bad value fails at configuration time
    return config


def _set(config: Config, name: str, value: Any) -> None:
    try:
        setattr(config, name, value)
    except (TypeError, ValueError):
        # An enum name in any case: `on` for ON, while `TLSv1_2` is taken as written.
        if not isinstance(value, str) or value.upper() == value:
            raise
        setattr(config, name, value.upper())


def _check_reconnect_mode(config: Config) -> None:
    # With ASYNC, a disconnected client fails every read at once with ClientOfflineError, and the reliable
    # topic listener retries at once without any pause: it would spin until the cluster is back.
    if config.reconnect_mode == ReconnectMode.ASYNC:
        raise ConfigError(
            "hazelcast.reconnect_mode=ASYNC: not usable with reliable topic listeners (they would retry "
            "without pause while offline); use ON (the default: invocations wait for the reconnection) or OFF"
        )
    if config.reconnect_mode == ReconnectMode.OFF:
        log.warning("hazelcast.reconnect_mode=OFF: the connector stops working at the first disconnection")
