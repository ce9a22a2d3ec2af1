"""The one interface every connector implements."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

# Called on the event loop thread with the raw record value, in partition order.
RecordHandler = Callable[[bytes], None]

#: How soon a subscription must see a new record: "low" (events: milliseconds), "control" (a control
#: channel: tens of milliseconds), "background" (an observer such as the dashboard: hundreds). A connector
#: that polls the cluster (Kafka) polls the patient ones less often; one that is pushed to treats all alike.
Latency = Literal["low", "control", "background"]


class ConnectorError(Exception):
    """The network event stream refused or failed an operation (broker down, topic missing, ...)."""


@runtime_checkable
class Subscription(Protocol):
    """One partition being consumed; closing it stops delivery and frees the client."""

    async def close(self) -> None: ...


@runtime_checkable
class Connector(Protocol):
    """Topics with numbered partitions: create on demand, publish to one partition, consume one partition."""

    #: "none", "kafka" or "hazelcast": shown as `service` in the health check.
    name: str
    #: where it connects, shown as `href` in the health check (e.g. "127.0.0.1:9092").
    href: str

    async def start(self) -> None:
        """Connect. Raises ConnectorError with a clear message when the cluster cannot be reached."""

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create the topic with at least `partitions` partitions unless it exists already."""

    async def list_topics(self) -> dict[str, int]:
        """Every topic the cluster holds and its partition count."""

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        """Queue one record for one partition, in call order; no task, no await needed to send it.

        The future completes once the cluster accepted the record, or fails with ConnectorError.
        """

    async def consume(
        self, topic: str, partition: int, on_record: RecordHandler, *, latency: Latency = "low"
    ) -> Subscription:
        """Deliver every record published to this partition after the call returns, in order.

        `latency`: how long a record may take to arrive (see `Latency`), so that idle subscriptions that
        can wait cost the cluster little.

        The partition is assigned, not joined through a consumer group: no rebalance, no group wait.
        """

    async def close(self) -> None:
        """Stop every subscription and release the client. Safe to call twice."""
