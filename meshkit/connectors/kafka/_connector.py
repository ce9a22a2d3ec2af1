"""KafkaConnector: the Connector protocol over confluent-kafka (librdkafka)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Defined in cimpl; confluent_kafka.admin re-exports it without declaring it, which mypy --strict refuses.
from confluent_kafka.cimpl import NewTopic

from meshkit.connectors._base import ConnectorError, Latency, RecordHandler
from meshkit.connectors.kafka._config import (
    admin_config,
    bootstrap_of,
    consumer_config,
    producer_config,
)
from meshkit.connectors.kafka._consumer import KafkaSubscription
from meshkit.connectors.kafka._producer import KafkaPublisher

log = logging.getLogger(__name__)


def _kafka_error(e: BaseException) -> str:
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        return str(e.args[0].str())
    return str(e) or type(e).__name__


class KafkaConnector:
    """Topics and partitions on a Kafka cluster; consumers are assigned one partition each, never joined."""

    name = "kafka"

    def __init__(
        self,
        settings: Mapping[str, str],
        *,
        connect_timeout: float = 10.0,
        topic_timeout: float = 10.0,
        replication_factor: int = -1,
    ) -> None:
        """`settings` are Kafka client settings (bootstrap.servers, security.protocol, sasl.*, ssl.*, ...).

        `replication_factor` -1 means the cluster's default for new topics.
        """
        self.settings = dict(settings)
        self.href = bootstrap_of(self.settings)
        self._connect_timeout = connect_timeout
        self._topic_timeout = topic_timeout
        self._replication_factor = replication_factor
        # One group.id per connector, shared by its assign-only consumers; it is never joined.
        self._group_id = f"meshkit-assign-only-{uuid.uuid4().hex}"
        self._admin: AdminClient | None = None
        self._publisher: KafkaPublisher | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        # Partition counts seen in metadata: publish checks them so a bad target fails fast, not after 30 s.
        self._partitions: dict[str, int] = {}
        self._refresh: asyncio.Task[dict[str, int]] | None = None
        self._checking: dict[str, int] = {}  # topics with publishes waiting on a metadata check
        self._closed = False

    def _check_open(self) -> tuple[AdminClient, KafkaPublisher]:
        if self._closed:
            raise ConnectorError("kafka connector is closed")
        if self._admin is None or self._publisher is None:
            raise ConnectorError("kafka connector is not started")
        return self._admin, self._publisher

    async def _metadata(self, admin: AdminClient, timeout: float, topic: str | None = None) -> dict[str, int]:
        kwargs: dict[str, Any] = {"timeout": timeout}
        if topic is not None:
            kwargs["topic"] = topic
        try:
            md = await asyncio.to_thread(admin.list_topics, **kwargs)
        except KafkaException as e:
            raise ConnectorError(f"cannot read topics from Kafka at {self.href}: {_kafka_error(e)}") from e
        return {name: len(tm.partitions) for name, tm in md.topics.items() if tm.error is None}

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError("kafka connector is closed")
        if self._publisher is not None:
            return
        admin = AdminClient(admin_config(self.settings))
        timeout = self._connect_timeout
        try:
            # Bounded: list_topics gives up after `timeout` when no broker answers.
            md = await asyncio.wait_for(asyncio.to_thread(admin.list_topics, timeout=timeout), timeout + 5)
        except (KafkaException, TimeoutError) as e:
            reason = _kafka_error(e) if isinstance(e, KafkaException) else f"no answer within {timeout} s"
            raise ConnectorError(f"cannot reach Kafka at {self.href}: {reason}") from e
        topics = {name: len(tm.partitions) for name, tm in md.topics.items() if tm.error is None}
        self._partitions = topics
        self._admin = admin
        self._publisher = KafkaPublisher(
            producer_config(self.settings), asyncio.get_running_loop(), extra_poll=admin.poll
        )

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        admin, _ = self._check_open()
        if not topic:
            raise ConnectorError("topic name must not be empty")
        if partitions < 1:
            raise ConnectorError(f"topic {topic} needs at least one partition, not {partitions}")
        existing = self._partitions.get(topic)
        if existing is not None:
            if existing < partitions:
                log.warning("topic %s exists with %d partitions, not %d", topic, existing, partitions)
            return
        futures = admin.create_topics(
            [NewTopic(topic, partitions, self._replication_factor)], request_timeout=self._topic_timeout
        )
        try:
            await asyncio.wait_for(asyncio.wrap_future(futures[topic]), self._topic_timeout + 5)
        except KafkaException as e:
            error = e.args[0] if e.args else None
            # Someone else created it first: that is what we wanted.
            if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise ConnectorError(f"cannot create topic {topic}: {_kafka_error(e)}") from e
        except TimeoutError as e:
            raise ConnectorError(
                f"cannot create topic {topic}: no answer within {self._topic_timeout} s"
            ) from e
        await self._await_metadata(admin, topic)

    async def _await_metadata(self, admin: AdminClient, topic: str) -> None:
        # A created topic reaches the metadata a little later; publish and consume need it there.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._topic_timeout
        while True:
            found = (await self._metadata(admin, self._topic_timeout, topic)).get(topic, 0)
            if found:
                self._partitions[topic] = found
                return
            if loop.time() > deadline:
                raise ConnectorError(f"topic {topic} not visible in metadata after {self._topic_timeout} s")
            await asyncio.sleep(0.05)

    async def list_topics(self) -> dict[str, int]:
        admin, _ = self._check_open()
        topics = await self._metadata(admin, self._topic_timeout)
        self._partitions = dict(topics)
        return topics

    async def _refreshed(self, admin: AdminClient) -> dict[str, int]:
        # Concurrent publishes to an unknown topic share one metadata request.
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._metadata(admin, self._topic_timeout))
        topics = await asyncio.shield(self._refresh)
        self._partitions.update(topics)
        return topics

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        try:
            admin, publisher = self._check_open()
        except ConnectorError as e:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(e)
            return failed
        count = self._partitions.get(topic)
        if count is not None and 0 <= partition < count and topic not in self._checking:
            return publisher.publish(topic, partition, payload)
        # Unknown topic or partition: check the metadata first; later records to the topic queue behind.
        self._checking[topic] = self._checking.get(topic, 0) + 1
        return asyncio.ensure_future(self._publish_checked(admin, publisher, topic, partition, payload))

    async def _publish_checked(
        self, admin: AdminClient, publisher: KafkaPublisher, topic: str, partition: int, payload: bytes
    ) -> None:
        try:
            count = self._partitions.get(topic)
            if count is None or not 0 <= partition < count:
                if partition >= 0:
                    count = (await self._refreshed(admin)).get(topic)
                if count is None:
                    raise ConnectorError(f"topic {topic} does not exist")
                if not 0 <= partition < count:
                    raise ConnectorError(
                        f"partition {partition} out of range: topic {topic} has {count} partitions"
                    )
            waiter = publisher.publish(topic, partition, payload)
        finally:
            left = self._checking[topic] - 1
            if left:
                self._checking[topic] = left
            else:
                del self._checking[topic]
        await waiter

    async def consume(
        self, topic: str, partition: int, on_record: RecordHandler, *, latency: Latency = "low"
    ) -> KafkaSubscription:
        self._check_open()
        if partition < 0:
            raise ConnectorError(f"partition {partition} out of range for topic {topic}")
        conf = consumer_config(self.settings, self._group_id, latency=latency)
        sub = KafkaSubscription(conf, topic, partition, on_record, asyncio.get_running_loop())
        self._subscriptions.add(sub)
        sub._on_close.append(self._subscriptions.discard)
        await sub.start(self._topic_timeout)
        return sub

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Consumers first: librdkafka must not be reading a topic that goes away under it.
        subscriptions = list(self._subscriptions)
        await asyncio.gather(*(sub.close() for sub in subscriptions), return_exceptions=True)
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        if self._publisher is not None:
            await self._publisher.close()
        self._publisher = None
        self._admin = None
