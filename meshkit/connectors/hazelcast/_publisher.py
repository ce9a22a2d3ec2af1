"""Publishing in call order: one lane per partition, one batch in flight per lane.

`publish` only queues. The first record for a partition looks the partition up (topic metadata, reliable
topic proxy) once; after that, records queued in one loop turn go out together as one `publish_all` (one
ringbuffer `add_all`), and while a batch is in flight the next records wait for it, so they reach the
ringbuffer in exactly the order they were published, even across reconnections and retries, and batches
grow by themselves under load.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hazelcast.future import Future as HzFuture

from meshkit.connectors._base import ConnectorError

log = logging.getLogger(__name__)

# The client refuses more than 1000 items per add_all.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024


class BatchTopic(Protocol):
    """What a lane needs of a reliable topic proxy."""

    @property
    def name(self) -> str: ...

    def publish_all(self, messages: Any) -> HzFuture[None]: ...


# (topic, partition) -> the reliable topic carrying it; raises ConnectorError when there is none.
Resolver = Callable[[str, int], Awaitable[BatchTopic]]


class _Lane:
    __slots__ = ("in_flight", "key", "outbox", "scheduled", "topic")

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.topic: BatchTopic | None = None
        self.outbox: deque[tuple[bytes, asyncio.Future[None]]] = deque()
        self.in_flight: list[asyncio.Future[None]] = []
        self.scheduled = False

    def busy(self) -> bool:
        return bool(self.outbox or self.in_flight)


def _fail(futures: list[asyncio.Future[None]], error: ConnectorError) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(error)


class OrderedPublisher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        resolve: Resolver,
        *,
        max_batch_records: int = MAX_BATCH_RECORDS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._loop = loop
        self._resolve = resolve
        self._max_records = max_batch_records
        self._max_bytes = max_batch_bytes
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._resolving: set[asyncio.Task[None]] = set()
        self._closed = False
        self._drained: asyncio.Event | None = None
        self.batches = 0  # add_all requests sent, for tests and benchmarks

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            fut.set_exception(ConnectorError("hazelcast connector is closed"))
            return fut
        key = (topic, partition)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
            task = self._loop.create_task(
                self._look_up(lane), name=f"meshkit:hazelcast:lane:{topic}.{partition}"
            )
            self._resolving.add(task)
            task.add_done_callback(self._resolving.discard)
        lane.outbox.append((payload, fut))
        if lane.topic is not None:
            self._schedule(lane)
        return fut

    async def _look_up(self, lane: _Lane) -> None:
        topic, partition = lane.key
        try:
            lane.topic = await self._resolve(topic, partition)
        except asyncio.CancelledError:
            self._drop(lane, ConnectorError("hazelcast connector closed before the record was sent"))
            raise
        except Exception as exc:
            error = exc if isinstance(exc, ConnectorError) else ConnectorError(f"{topic}[{partition}]: {exc}")
            # Forgotten, so a later publish looks again (the topic may have been created meanwhile).
            self._drop(lane, error)
            return
        self._schedule(lane)

    def _drop(self, lane: _Lane, error: ConnectorError) -> None:
        if self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]
        queued = [fut for _, fut in lane.outbox]
        lane.outbox.clear()
        _fail(queued, error)
        self._check_drained()

    def _schedule(self, lane: _Lane) -> None:
        # Everything published in this loop turn joins the batch.
        if lane.in_flight or lane.scheduled or not lane.outbox:
            return
        lane.scheduled = True
        self._loop.call_soon(self._flush, lane)

    def _flush(self, lane: _Lane) -> None:
        lane.scheduled = False
        topic = lane.topic
        if lane.in_flight or topic is None:
            return
        payloads: list[bytearray] = []
        futures: list[asyncio.Future[None]] = []
        size = 0
        while lane.outbox and len(payloads) < self._max_records:
            payload, fut = lane.outbox[0]
            if fut.done():  # cancelled by its publisher: not sent
                lane.outbox.popleft()
                continue
            if payloads and size + len(payload) > self._max_bytes:
                break
            lane.outbox.popleft()
            # A bytearray is serialised as a Java byte[] (type -12); bytes would be pickled.
            payloads.append(bytearray(payload))
            futures.append(fut)
            size += len(payload)
        if not payloads:
            self._check_drained()
            return
        lane.in_flight = futures
        self.batches += 1
        try:
            sending = topic.publish_all(payloads)
        except Exception as exc:
            self._settle(lane, futures, exc)
            return
        sending.add_done_callback(functools.partial(self._acknowledged, lane, futures))

    def _acknowledged(
        self, lane: _Lane, futures: list[asyncio.Future[None]], sending: HzFuture[None]
    ) -> None:
        # On the client's thread (or this one, when the result was immediate).
        error = sending.exception()
        try:
            self._loop.call_soon_threadsafe(self._settle, lane, futures, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _settle(self, lane: _Lane, futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
        if lane.in_flight is futures:
            lane.in_flight = []
        if error is None:
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)
        else:
            name = lane.topic.name if lane.topic is not None else "?"
            _fail(futures, ConnectorError(f"publish to reliable topic {name} failed: {error}"))
        if lane.outbox:
            self._flush(lane)  # what queued up meanwhile goes now, as one batch
        else:
            self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is not None and not any(lane.busy() for lane in self._lanes.values()):
            self._drained.set()

    async def close(self, timeout: float = 5.0) -> None:
        """Refuse new records; let queued and in-flight ones finish for up to `timeout` s, fail the rest."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._resolving):
            task.cancel()
        if self._resolving:
            await asyncio.gather(*self._resolving, return_exceptions=True)
        self._drained = asyncio.Event()
        self._check_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            log.warning("Hazelcast records not acknowledged within %g s of closing", timeout)
        error = ConnectorError("hazelcast connector closed before the record was acknowledged")
        for lane in self._lanes.values():
            _fail([fut for _, fut in lane.outbox], error)
            _fail(lane.in_flight, error)
            lane.outbox.clear()
            lane.in_flight = []
        self._lanes.clear()
