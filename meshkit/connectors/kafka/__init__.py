"""The Kafka connector (`cloud.connector=kafka`), on confluent-kafka (librdkafka).

`KafkaConnector(settings)` takes the Kafka client settings as configured (`bootstrap.servers`, SASL/TLS, any
librdkafka key) and adds meshkit's latency defaults only where the user set nothing: see `producer_config`
and `consumer_config`, which the Kafka floor benchmark uses too so both measure the same client.
"""

try:
    import confluent_kafka  # noqa: F401
except ModuleNotFoundError as e:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        "cloud.connector=kafka needs confluent-kafka: pip install 'meshkit[kafka]'"
    ) from e

from meshkit.connectors.kafka._config import (
    CONSUMER_DEFAULTS,
    MAX_RECORD_BYTES,
    PATIENT_FETCH_WAIT_MS,
    PRODUCER_DEFAULTS,
    admin_config,
    consumer_config,
    kafka_settings,
    producer_config,
)
from meshkit.connectors.kafka._connector import KafkaConnector
from meshkit.connectors.kafka._consumer import KafkaSubscription

__all__ = [
    "CONSUMER_DEFAULTS",
    "MAX_RECORD_BYTES",
    "PATIENT_FETCH_WAIT_MS",
    "PRODUCER_DEFAULTS",
    "KafkaConnector",
    "KafkaSubscription",
    "admin_config",
    "consumer_config",
    "kafka_settings",
    "producer_config",
]
