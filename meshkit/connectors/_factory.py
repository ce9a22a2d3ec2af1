"""The one connector factory: `cloud.connector` from the configuration to a Connector."""

from __future__ import annotations

from meshkit.config import AppConfig, ConfigError
from meshkit.connectors._base import Connector

CONNECTORS = ("none", "kafka", "hazelcast")


def connector_kind(config: AppConfig) -> str:
    """`cloud.connector`, checked: none (standalone: the in-memory bus only), kafka or hazelcast."""
    kind = (config.get("cloud.connector", "none") or "none").strip().lower()
    if kind not in CONNECTORS:
        raise ConfigError(
            f"cloud.connector={kind!r} ({config.source_of('cloud.connector')}): "
            f"expected one of {', '.join(CONNECTORS)}"
        )
    return kind


def make_connector(config: AppConfig) -> Connector:
    """The connector `cloud.connector` names, with its settings from the configuration.

    `none` is the in-memory connector on the process-wide broker (a monitor and apps in one process).
    """
    kind = connector_kind(config)
    if kind == "kafka":
        try:
            from meshkit.connectors.kafka import KafkaConnector, kafka_settings
        except ImportError as exc:
            raise ConfigError(f"cloud.connector=kafka is not available: {exc}") from exc
        return KafkaConnector(kafka_settings(config))
    if kind == "hazelcast":
        try:
            from meshkit.connectors.hazelcast import HazelcastConnector, hazelcast_settings
        except ImportError as exc:
            raise ConfigError(f"cloud.connector=hazelcast is not available: {exc}") from exc
        return HazelcastConnector(hazelcast_settings(config))
    from meshkit.connectors.memory import MemoryConnector

    return MemoryConnector()
