"""Client settings: the user's Kafka settings passed through, plus meshkit's latency defaults where unset."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from meshkit.config import AppConfig
from meshkit.connectors._base import Latency

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

# librdkafka logs and errors go to Python logging instead of raw stderr.
client_log = logging.getLogger("meshkit.connectors.kafka.client")

MAX_RECORD_BYTES = 4 * 1024 * 1024
_TRANSPORT = KafkaError._TRANSPORT

PRODUCER_DEFAULTS: dict[str, str] = {
    # Send at once; records queued while a request is in flight still go out together.
    "linger.ms": "0",
    # Leader ack only: mesh records are transient RPC guarded by caller timeouts, so skip the ISR round trip.
    "acks": "1",
    # Above librdkafka's 1,000,000 default so a 1 MiB record fits; envelopes are segmented at 64 KB above us.
    "message.max.bytes": str(MAX_RECORD_BYTES),
    # Fail a publish after 30 s instead of librdkafka's 5 minutes when the cluster is gone.
    "message.timeout.ms": "30000",
    # Publishing to a missing topic must fail, not create it (Tansu and many brokers auto-create).
    "allow.auto.create.topics": "false",
    # Small request/response pairs: never let Nagle hold a segment back.
    "socket.nagle.disable": "true",
}

# How long a patient consumer's fetch may wait (fetch.wait.max.ms), by the subscription's latency class:
# a control channel (a group's partition of service.monitor) tolerates 100 ms, a background observer (the
# dashboard's route listener) 500 ms; the mesh's event consumers ask every 2 ms (CONSUMER_DEFAULTS).
PATIENT_FETCH_WAIT_MS: dict[str, str] = {"control": "100", "background": "500"}

CONSUMER_DEFAULTS: dict[str, str] = {
    # The broker answers an empty fetch after 2 ms: a hop costs about half of this on average.
    "fetch.wait.max.ms": "2",
    "fetch.min.bytes": "1",
    # Partitions are assigned, never joined, and positions are never committed.
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "enable.partition.eof": "false",
    "socket.nagle.disable": "true",
}

# Keys that name the same librdkafka property: a user value under any alias wins over our default.
_ALIASES: dict[str, tuple[str, ...]] = {
    "linger.ms": ("linger.ms", "queue.buffering.max.ms"),
    "acks": ("acks", "request.required.acks"),
    "message.timeout.ms": ("message.timeout.ms", "delivery.timeout.ms"),
}

_PRODUCER_ONLY = frozenset(
    {
        "acks",
        "request.required.acks",
        "linger.ms",
        "queue.buffering.max.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "enable.idempotence",
        "compression.type",
        "compression.codec",
        "compression.level",
        "batch.num.messages",
        "batch.size",
        "retries",
        "message.send.max.retries",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "transactional.id",
        "transaction.timeout.ms",
        "partitioner",
        "sticky.partitioning.linger.ms",
    }
)

_CONSUMER_ONLY_PREFIXES = ("fetch.", "queued.", "auto.commit.", "group.", "session.", "heartbeat.")
_CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "auto.offset.reset",
        "max.poll.interval.ms",
        "isolation.level",
        "partition.assignment.strategy",
        "check.crcs",
        "max.partition.fetch.bytes",
    }
)


def _is_consumer_only(key: str) -> bool:
    return key in _CONSUMER_ONLY or key.startswith(_CONSUMER_ONLY_PREFIXES)


def _user_set(settings: Mapping[str, str], key: str) -> bool:
    return any(alias in settings for alias in _ALIASES.get(key, (key,)))


def _log_errors(err: Any) -> None:
    # Called from librdkafka, which retries by itself; a refused connection is already in its own log.
    code = err.code() if hasattr(err, "code") else None
    level = logging.DEBUG if code == _TRANSPORT else logging.WARNING
    client_log.log(level, "kafka client error: %s", err)


def _base(settings: Mapping[str, str]) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": DEFAULT_BOOTSTRAP}
    conf.update(settings)
    conf["logger"] = client_log
    conf["error_cb"] = _log_errors
    return conf


def bootstrap_of(settings: Mapping[str, str]) -> str:
    return settings.get("bootstrap.servers", DEFAULT_BOOTSTRAP)


def producer_config(settings: Mapping[str, str]) -> dict[str, Any]:
    """Producer settings: the user's settings (consumer-only keys dropped) plus the latency defaults."""
    conf = {k: v for k, v in _base(settings).items() if not _is_consumer_only(k)}
    idempotent = str(settings.get("enable.idempotence", "false")).lower() == "true"
    for key, value in PRODUCER_DEFAULTS.items():
        # Idempotence requires acks=all; respect the user's choice rather than fight it.
        if key == "acks" and idempotent:
            continue
        if not _user_set(settings, key):
            conf[key] = value
    return conf


def consumer_config(
    settings: Mapping[str, str], group_id: str | None = None, *, latency: Latency = "low"
) -> dict[str, Any]:
    """Consumer settings for assign-only consumers: a unique group.id that is never joined.

    `latency` other than "low": an idle consumer asks the broker every fetch.wait.max.ms, and 2 ms there
    is waste, so it waits longer (PATIENT_FETCH_WAIT_MS) unless the user set the key.
    """
    conf = {k: v for k, v in _base(settings).items() if k not in _PRODUCER_ONLY}
    patient = PATIENT_FETCH_WAIT_MS.get(latency)
    defaults = {**CONSUMER_DEFAULTS, "fetch.wait.max.ms": patient} if patient else CONSUMER_DEFAULTS
    for key, value in defaults.items():
        if not _user_set(settings, key):
            conf[key] = value
    # librdkafka wants a group.id even for assign(); a unique one keeps consumers from sharing offsets.
    conf["group.id"] = group_id or f"meshkit-assign-only-{uuid.uuid4().hex}"
    return conf


def admin_config(settings: Mapping[str, str]) -> dict[str, Any]:
    """AdminClient settings: connection and security keys only."""
    return {k: v for k, v in _base(settings).items() if k not in _PRODUCER_ONLY and not _is_consumer_only(k)}


# Kafka client settings users may put in application.properties without the `kafka.` prefix.
_PLAIN_KEYS = ("bootstrap.servers", "security.protocol", "client.id")
_PLAIN_PREFIXES = ("sasl.", "ssl.")


def kafka_settings(config: AppConfig) -> dict[str, str]:
    """`bootstrap.servers`, `security.protocol`, `sasl.*`, `ssl.*`, and any `kafka.<librdkafka key>`."""
    settings: dict[str, str] = {}
    for key in config.keys():
        if key in _PLAIN_KEYS or key.startswith(_PLAIN_PREFIXES):
            settings[key] = config.get(key) or ""
        elif key.startswith("kafka."):
            settings[key[len("kafka.") :]] = config.get(key) or ""
    for key in _PLAIN_KEYS:  # environment variables count too (BOOTSTRAP_SERVERS)
        value = config.get(key)
        if value:
            settings[key] = value
    settings.setdefault("bootstrap.servers", DEFAULT_BOOTSTRAP)
    return settings
