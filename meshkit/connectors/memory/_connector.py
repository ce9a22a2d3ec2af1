"""MemoryConnector: the Connector protocol over a MemoryBroker, for `cloud.connector=none` and unit tests."""

from __future__ import annotations

import asyncio

from meshkit.connectors._base import ConnectorError, Latency, RecordHandler
from meshkit.connectors.memory._broker import MemoryBroker, MemorySubscriber


class MemorySubscription:
    """One partition consumed from a MemoryBroker."""

    def __init__(self, connector: MemoryConnector, topic: str, partition: int, sub: MemorySubscriber) -> None:
        self._connector = connector
        self.topic = topic
        self.partition = partition
        self._sub = sub

    async def close(self) -> None:
        self._connector._detach(self)
        self._connector.broker.unsubscribe(self.topic, self.partition, self._sub)


class MemoryConnector:
    """In-process connector; instances sharing one MemoryBroker form a mesh inside one process."""

    name = "none"
    href = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker.default()
        self._subscriptions: set[MemorySubscription] = set()
        self._started = False
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError("memory connector is closed")
        if not self._started:
            raise ConnectorError("memory connector is not started")

    def _detach(self, subscription: MemorySubscription) -> None:
        self._subscriptions.discard(subscription)

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError("memory connector is closed")
        self._started = True

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        self._check_open()
        self.broker.ensure_topic(topic, partitions)

    async def list_topics(self) -> dict[str, int]:
        self._check_open()
        return self.broker.topics()

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._check_open()
            self.broker.publish(topic, partition, payload)
        except ConnectorError as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    async def consume(
        self, topic: str, partition: int, on_record: RecordHandler, *, latency: Latency = "low"
    ) -> MemorySubscription:
        self._check_open()
        sub = MemorySubscriber(asyncio.get_running_loop(), on_record)
        self.broker.subscribe(topic, partition, sub)
        subscription = MemorySubscription(self, topic, partition, sub)
        self._subscriptions.add(subscription)
        return subscription

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
