"""The service mesh: a connector, a presence monitor, and a routing table in every app (SPEC §7)."""

from __future__ import annotations

from meshkit._config import AppConfig, ConfigError
from meshkit._platform import Platform
from meshkit.connectors import Connector
from meshkit.mesh._node import HEALTH_ROUTE, MeshNode, mesh_settings
from meshkit.mesh._table import Peer, RoutingTable
from meshkit.mesh._topics import MONITOR_TOPIC, TopicLayout, VirtualTopic

__all__ = [
    "HEALTH_ROUTE",
    "MONITOR_TOPIC",
    "MeshNode",
    "Peer",
    "RoutingTable",
    "TopicLayout",
    "VirtualTopic",
    "join_mesh",
    "make_connector",
    "mesh_settings",
]

# Kafka client settings users may put in application.properties without the `kafka.` prefix.
_KAFKA_KEYS = ("bootstrap.servers", "security.protocol", "client.id")
_KAFKA_PREFIXES = ("sasl.", "ssl.")


def kafka_settings(config: AppConfig) -> dict[str, str]:
    """`bootstrap.servers`, `security.protocol`, `sasl.*`, `ssl.*`, and any `kafka.<librdkafka key>`."""
    settings: dict[str, str] = {}
    for key in config.keys():
        if key in _KAFKA_KEYS or key.startswith(_KAFKA_PREFIXES):
            settings[key] = config.get(key) or ""
        elif key.startswith("kafka."):
            settings[key[len("kafka.") :]] = config.get(key) or ""
    for key in _KAFKA_KEYS:  # environment variables count too (BOOTSTRAP_SERVERS)
        value = config.get(key)
        if value:
            settings[key] = value
    settings.setdefault("bootstrap.servers", "127.0.0.1:9092")
    return settings


def make_connector(config: AppConfig, kind: str | None = None) -> Connector:
    kind = kind or (config.get("cloud.connector", "none") or "none").lower()
    if kind == "kafka":
        from meshkit.connectors.kafka import KafkaConnector

        return KafkaConnector(kafka_settings(config))
    if kind == "hazelcast":
        try:
            from meshkit.connectors.hazelcast import HazelcastConnector, hazelcast_settings
        except ImportError as exc:
            raise ConfigError(f"cloud.connector=hazelcast is not available: {exc}") from exc
        return HazelcastConnector(hazelcast_settings(config))
    if kind == "none":
        from meshkit.connectors.memory import MemoryConnector

        return MemoryConnector()
    raise ConfigError(f"cloud.connector={kind!r}: expected none, kafka or hazelcast")


async def join_mesh(platform: Platform, kind: str, connector: Connector | None = None) -> MeshNode:
    """Connect `platform` to the mesh; it leaves when the platform stops."""
    node = MeshNode(platform, connector if connector is not None else make_connector(platform.config, kind))
    await node.start()
    platform.on_shutdown(node.stop)
    return node
