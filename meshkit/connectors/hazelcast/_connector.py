"""HazelcastConnector: the Connector protocol over hazelcast-python-client (reliable topics + a map)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from hazelcast.client import HazelcastClient
from hazelcast.config import Config, ReliableTopicConfig, TopicOverloadPolicy
from hazelcast.errors import HazelcastSerializationError
from hazelcast.future import Future as HzFuture
from hazelcast.lifecycle import LifecycleState
from hazelcast.proxy.map import Map
from hazelcast.proxy.reliable_topic import ReliableTopic

from meshkit.connectors._base import ConnectorError, Latency, RecordHandler
from meshkit.connectors.hazelcast._bridge import bridge
from meshkit.connectors.hazelcast._config import (
    MAX_RECORD_BYTES,
    client_config,
    connect_timeout_of,
    members_of,
    normalized,
    read_batch_size_of,
)
from meshkit.connectors.hazelcast._listener import HazelcastSubscription
from meshkit.connectors.hazelcast._naming import METADATA_MAP, decode_topic, encode_topic, partition_topic
from meshkit.connectors.hazelcast._publisher import BatchTopic, OrderedPublisher

log = logging.getLogger(__name__)

T = TypeVar("T")

# The client's own thread for connecting and reconnecting, and how long close() waits for it to end.
_CONNECT_THREAD = "hazelcast_async_connection"
_CONNECT_THREAD_SECONDS = 5.0


def refuse_pickles(serialization_service: Any) -> bool:
    """Make the client refuse to unpickle values it reads; True when done.

    The Python client deserialises values of type -120 with `pickle.loads`, so anyone able to publish on a
    topic this app reads could run code in it. meshkit only ever writes byte arrays and JSON values.
    """
    serializer = getattr(serialization_service, "_python_serializer", None)
    if serializer is None or not hasattr(serializer, "read"):
        return False

    def refuse(inp: Any) -> Any:
        raise HazelcastSerializationError("refused a pickled Python value: meshkit records are byte arrays")

    serializer.read = refuse
    return True


def _join_connect_threads(before: set[int | None], timeout: float) -> None:
    """Wait for the client's (re)connection threads started since `before` to see the shutdown and end.

    The client connects in a thread of its own that sleeps between attempts; after `shutdown()` it ends at
    its next wake-up. Threads of other clients started meanwhile may be waited for too, within the bound.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == _CONNECT_THREAD and thread.ident not in before and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))


class HazelcastConnector:
    """Topics of partitions on a Hazelcast cluster: a reliable topic per partition, metadata in a map."""

    name = "hazelcast"

    def __init__(
        self,
        settings: Mapping[str, str],
        *,
        connect_timeout: float | None = None,
        operation_timeout: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        """`settings` are client options by name (see `hazelcast_settings`): `cluster_members` (a comma
        list of host:port), `cluster_name`, and any other option of `hazelcast.config.Config`.

        `connect_timeout` bounds start() (default: the `cluster_connect_timeout` option, else 10 s);
        `operation_timeout` bounds each topic lookup, creation and listener registration.
        """
        self.settings = normalized(settings)
        self.members = members_of(self.settings)
        self.href = ",".join(self.members)
        self.cluster_name = self.settings.get("cluster_name") or "dev"
        client_config(self.settings)  # a bad option fails here, at configuration time
        self._connect_timeout = (
            connect_timeout if connect_timeout is not None else connect_timeout_of(settings)
        )
        self._operation_timeout = operation_timeout
        self._close_timeout = close_timeout
        self._read_batch_size = read_batch_size_of(self.settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._config: Config | None = None
        self._client: HazelcastClient | None = None
        self._map: Map[str, Any] | None = None
        self._publisher: OrderedPublisher | None = None
        self._connected: asyncio.Future[None] | None = None
        self._was_connected = False
        self._subscriptions: set[HazelcastSubscription] = set()
        # Partition counts seen in the metadata map; a topic's count never changes once created.
        self._partitions: dict[str, int] = {}
        self._lookups: dict[str, asyncio.Task[int | None]] = {}
        # One proxy per reliable topic, shared by publishing and every listener on it.
        self._topics: dict[str, asyncio.Task[ReliableTopic[Any]]] = {}
        self._stopping = False  # our own client shutdown is under way
        self._threads_before: set[int | None] = set()
        self._closing = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _check_open(self) -> tuple[HazelcastClient, Map[str, Any], OrderedPublisher]:
        if self._closed or self._closing:
            raise ConnectorError("hazelcast connector is closed")
        if self._client is None or self._map is None or self._publisher is None:
            raise ConnectorError("hazelcast connector is not started")
        return self._client, self._map, self._publisher

    async def start(self) -> None:
        if self._closed or self._closing:
            raise ConnectorError("hazelcast connector is closed")
        if self._client is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        config = self._config = client_config(self.settings)
        # The client connects in the background and reconnects by itself; start() bounds the first wait.
        config.async_start = True
        config.lifecycle_listeners = [self._lifecycle_event]
        try:
            # Returns at once with async_start; its set-up still runs off the loop.
            self._threads_before = {t.ident for t in threading.enumerate()}
            self._client = await asyncio.to_thread(HazelcastClient, config)
        except Exception as exc:
            raise ConnectorError(f"cannot reach Hazelcast at {self.href}: {exc}") from exc
        if not refuse_pickles(getattr(self._client, "_serialization_service", None)):
            log.warning(
                "This Hazelcast client version would unpickle Python values it reads from the cluster"
            )
        try:
            async with asyncio.timeout(self._connect_timeout):
                await asyncio.shield(self._connected)
            self._map = await self._off_loop(
                self._client.get_map, METADATA_MAP, what="cannot open topic metadata"
            )
        except TimeoutError:
            await self._shut_down()
            raise ConnectorError(
                f"cannot reach Hazelcast at {self.href} (cluster {self.cluster_name}): "
                f"no member answered within {self._connect_timeout:g} s"
            ) from None
        except BaseException:
            await self._shut_down()
            raise
        self._publisher = OrderedPublisher(loop, self._lane_topic)

    def _lifecycle_event(self, state: str) -> None:
        # On a client thread.
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._lifecycle_changed, state)
        except RuntimeError:  # the loop is closed
            pass

    def _lifecycle_changed(self, state: str) -> None:
        connected = self._connected
        if state == LifecycleState.CONNECTED:
            if self._was_connected:
                log.info("Reconnected to Hazelcast cluster %s at %s", self.cluster_name, self.href)
            else:
                log.info("Connected to Hazelcast cluster %s at %s", self.cluster_name, self.href)
            self._was_connected = True
            if connected is not None and not connected.done():
                connected.set_result(None)
        elif state == LifecycleState.DISCONNECTED:
            if not self._stopping:
                log.warning(
                    "Disconnected from Hazelcast cluster %s at %s: reconnecting (calls wait meanwhile)",
                    self.cluster_name,
                    self.href,
                )
        elif state == LifecycleState.SHUTDOWN:
            if connected is not None and not connected.done():
                reason = "closed" if self._stopping else "the client gave up (see its log)"
                connected.set_exception(ConnectorError(f"cannot reach Hazelcast at {self.href}: {reason}"))
            elif not self._stopping:
                log.error(
                    "The Hazelcast client shut down by itself (cluster %s at %s unreachable for too long): "
                    "this app no longer sends or receives mesh events",
                    self.cluster_name,
                    self.href,
                )
        else:
            log.debug("Hazelcast client %s", state)

    def _client_running(self) -> bool:
        client = self._client
        return client is not None and not self._stopping and client.lifecycle_service.is_running()

    async def _shut_down(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._stopping = True
            await asyncio.to_thread(client.shutdown)
            await asyncio.to_thread(_join_connect_threads, self._threads_before, _CONNECT_THREAD_SECONDS)
        connected = self._connected
        if connected is not None:
            if not connected.done():
                connected.cancel()
            elif not connected.cancelled():
                connected.exception()  # retrieved, so the loop does not report it

    async def close(self) -> None:
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            # Listeners first, so no record arrives for a subscription that is going away.
            for subscription in list(self._subscriptions):
                await subscription.close()
            if self._publisher is not None:
                await self._publisher.close(self._close_timeout)
            for task in [*self._lookups.values(), *self._topics.values()]:
                task.cancel()
            await asyncio.gather(*self._lookups.values(), *self._topics.values(), return_exceptions=True)
            await self._shut_down()
        finally:
            self._closed = True
            self._map = None

    # -- calls into the client -----------------------------------------------------------------------------
    async def _call(self, operation: Callable[[], HzFuture[T]], what: str) -> T:
        """Run one client operation, bounded by the operation timeout; its failure as a ConnectorError."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._operation_timeout):
                return await bridge(operation(), loop)
        except TimeoutError:
            raise ConnectorError(f"{what}: no answer within {self._operation_timeout:g} s") from None
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(f"{what}: {exc}") from exc

    async def _off_loop(self, blocking: Callable[[str], T], name: str, *, what: str) -> T:
        """Getting a proxy waits for the member (it is created there): in a worker thread, bounded."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(blocking, name), self._operation_timeout)
        except TimeoutError:
            raise ConnectorError(f"{what} {name}: no answer within {self._operation_timeout:g} s") from None
        except Exception as exc:
            raise ConnectorError(f"{what} {name}: {exc}") from exc

    async def _reliable_topic(self, name: str) -> ReliableTopic[Any]:
        task = self._topics.get(name)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._topics[name] = asyncio.get_running_loop().create_task(self._new_reliable_topic(name))
        return await asyncio.shield(task)

    async def _new_reliable_topic(self, name: str) -> ReliableTopic[Any]:
        client, _, _ = self._check_open()
        config = self._config
        if config is not None and name not in config.reliable_topics:
            # Never BLOCK: that policy swallows publish errors in this client; with the member's default
            # ringbuffer (no time-to-live) overwriting the oldest record is what happens anyway.
            config.reliable_topics[name] = ReliableTopicConfig.from_dict(
                {
                    "read_batch_size": self._read_batch_size,
                    "overload_policy": TopicOverloadPolicy.DISCARD_OLDEST,
                }
            )
        return await self._off_loop(client.get_reliable_topic, name, what="cannot open reliable topic")

    # -- topic metadata ------------------------------------------------------------------------------------
    async def _partition_count(self, topic: str) -> int | None:
        count = self._partitions.get(topic)
        if count is not None:
            return count
        task = self._lookups.get(topic)
        if task is None:
            task = self._lookups[topic] = asyncio.get_running_loop().create_task(self._look_up(topic))
            task.add_done_callback(lambda _: self._lookups.pop(topic, None))
        return await asyncio.shield(task)

    async def _look_up(self, topic: str) -> int | None:
        _, topics, _ = self._check_open()
        value = await self._call(lambda: topics.get(topic), f"cannot read the metadata of topic {topic}")
        if value is None:
            return None
        try:
            count = decode_topic(value)
        except ValueError as exc:
            raise ConnectorError(f"topic {topic}: {exc}") from None
        self._partitions[topic] = count
        return count

    async def _checked(self, topic: str, partition: int) -> None:
        count = await self._partition_count(topic)
        if count is None:
            raise ConnectorError(f"topic {topic} does not exist")
        if not 0 <= partition < count:
            raise ConnectorError(f"partition {partition} out of range: topic {topic} has {count} partitions")

    async def _lane_topic(self, topic: str, partition: int) -> BatchTopic:
        await self._checked(topic, partition)
        return await self._reliable_topic(partition_topic(topic, partition))

    # -- the Connector protocol ----------------------------------------------------------------------------
    async def ensure_topic(self, topic: str, partitions: int) -> None:
        _, topics, _ = self._check_open()
        if not topic:
            raise ConnectorError("topic name must not be empty")
        if partitions < 1:
            raise ConnectorError(f"topic {topic} needs at least one partition, not {partitions}")
        # Always asked of the cluster: after a full cluster restart the map is empty again.
        previous = await self._call(
            lambda: topics.put_if_absent(topic, encode_topic(partitions)), f"cannot create topic {topic}"
        )
        if previous is None:
            log.info("Created topic %s with %d partitions", topic, partitions)
            self._partitions[topic] = partitions
            return
        try:
            existing = decode_topic(previous)
        except ValueError as exc:
            raise ConnectorError(f"topic {topic}: {exc}") from None
        self._partitions[topic] = existing
        if existing < partitions:
            log.warning("topic %s exists with %d partitions, not %d", topic, existing, partitions)

    async def list_topics(self) -> dict[str, int]:
        _, topics, _ = self._check_open()
        entries = await self._call(topics.entry_set, "cannot read topics")
        found: dict[str, int] = {}
        for key, value in entries:
            try:
                found[str(key)] = decode_topic(value)
            except ValueError as exc:
                log.warning("Ignored topic %r in %s: %s", key, METADATA_MAP, exc)
        self._partitions.update(found)
        return found

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        try:
            if len(payload) > MAX_RECORD_BYTES:
                raise ConnectorError(
                    f"record of {len(payload)} bytes exceeds the maximum of {MAX_RECORD_BYTES} bytes"
                )
            _, _, publisher = self._check_open()
        except ConnectorError as exc:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        return publisher.publish(topic, partition, payload)

    async def consume(
        self, topic: str, partition: int, on_record: RecordHandler, *, latency: Latency = "low"
    ) -> HazelcastSubscription:
        # latency changes nothing here: a reliable topic pushes to its listener, nothing polls
        self._check_open()
        await self._checked(topic, partition)
        reliable_topic = await self._reliable_topic(partition_topic(topic, partition))
        subscription = HazelcastSubscription(
            topic, partition, reliable_topic, on_record, asyncio.get_running_loop(), self._client_running
        )
        await subscription.start(self._operation_timeout)
        if self._closing:
            await subscription.close()
            raise ConnectorError("hazelcast connector is closed")
        self._subscriptions.add(subscription)
        subscription._on_close.append(self._subscriptions.discard)
        return subscription
