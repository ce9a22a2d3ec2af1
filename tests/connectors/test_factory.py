"""The one connector factory: `cloud.connector` to a Connector, and the latency classes of a subscription."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from meshkit import AppConfig, ConfigError, install
from meshkit.connectors import connector_kind, make_connector
from meshkit.connectors.kafka import KafkaConnector, consumer_config
from meshkit.connectors.memory import MemoryBroker, MemoryConnector


def config(**properties: str) -> AppConfig:
    return AppConfig.load(
        argv=[], environ={}, overrides={k.replace("_", "."): v for k, v in properties.items()}
    )


def test_the_kind_is_checked_and_normalised() -> None:
    assert connector_kind(config()) == "none"
    assert connector_kind(config(cloud_connector=" Kafka ")) == "kafka"
    with pytest.raises(
        ConfigError, match=r"cloud\.connector='rabbit' \(.*\): expected one of none, kafka, hazelcast"
    ):
        connector_kind(config(cloud_connector="rabbit"))


def test_none_is_the_memory_connector_on_the_process_broker() -> None:
    connector = make_connector(config())
    assert isinstance(connector, MemoryConnector) and connector.broker is MemoryBroker.default()


def test_kafka_takes_its_settings_from_the_configuration() -> None:
    connector = make_connector(
        config(cloud_connector="kafka", bootstrap_servers="broker-1:9093", **{"kafka.linger.ms": "5"})
    )
    assert isinstance(connector, KafkaConnector)
    assert connector.href == "broker-1:9093"
    assert connector.settings["linger.ms"] == "5"


def test_a_bad_connector_is_refused_when_the_app_is_assembled() -> None:
    with pytest.raises(ConfigError, match=r"cloud\.connector"):
        install(FastAPI(), config=config(cloud_connector="rabbit"))
    with pytest.raises(ConfigError, match=r"cloud\.connector"):  # the monitor's way: it stays out of the mesh
        install(FastAPI(), config=config(cloud_connector="rabbit"), join_mesh=False)


@pytest.mark.parametrize(("latency", "wait"), [("low", "2"), ("control", "100"), ("background", "500")])
def test_a_patient_kafka_consumer_polls_less_often(latency: str, wait: str) -> None:
    assert consumer_config({}, latency=latency)["fetch.wait.max.ms"] == wait  # type: ignore[arg-type]
    assert consumer_config({"fetch.wait.max.ms": "7"}, latency=latency)["fetch.wait.max.ms"] == "7"
