"""The Kafka connector's settings: what of an app's configuration reaches the client, and how."""

from __future__ import annotations

from meshkit import AppConfig
from meshkit.connectors.kafka import consumer_config, kafka_settings, producer_config


def test_kafka_tls_and_sasl_settings_pass_through_to_the_client() -> None:
    config = AppConfig.load(
        argv=[],
        environ={"KAFKA_PASSWORD": "s3cret"},
        overrides={
            "bootstrap.servers": "broker-1:9093,broker-2:9093",
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "meshkit",
            "sasl.password": "${KAFKA_PASSWORD}",
            "ssl.ca.location": "/etc/ssl/certs/kafka-ca.pem",
            "kafka.client.rack": "eu-west-1a",
            "application.name": "not-a-kafka-setting",
        },
    )
    settings = kafka_settings(config)
    assert settings == {
        "bootstrap.servers": "broker-1:9093,broker-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "meshkit",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/certs/kafka-ca.pem",
        "client.rack": "eu-west-1a",
    }
    for client in (producer_config(settings), consumer_config(settings)):
        assert client["security.protocol"] == "SASL_SSL" and client["sasl.password"] == "s3cret"
        assert client["ssl.ca.location"] == "/etc/ssl/certs/kafka-ca.pem"
