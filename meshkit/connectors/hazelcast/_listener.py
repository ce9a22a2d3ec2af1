"""One consumed partition: a reliable topic listener on the client's thread, records handed to the loop.

The client calls the listener on its reactor thread, one message after another in ringbuffer order. Records
are appended to a buffer under a lock; only the first record of a burst schedules a hop to the loop, which
then drains everything buffered by the time it runs: one `call_soon_threadsafe` per burst, order kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from hazelcast.proxy.base import TopicMessage
from hazelcast.proxy.reliable_topic import ReliableMessageListener, ReliableTopic

from meshkit.connectors._base import ConnectorError, RecordHandler
from meshkit.connectors.hazelcast._bridge import bridge

log = logging.getLogger(__name__)

# Pauses between attempts to listen again after the client dropped a listener.
_RETRY_FIRST = 0.5
_RETRY_MAX = 10.0


def as_record(value: object) -> bytes | None:
    """A message's payload as record bytes; None for anything that is not a byte array."""
    if isinstance(value, bytearray | bytes):
        return bytes(value)
    return None


class PartitionListener(ReliableMessageListener[Any]):
    """Called by the client's reactor thread; delivers to `deliver` on `loop`, in order, in batches.

    Starts at the end of the partition, tolerates loss (a reader that fell behind an overwritten ringbuffer
    goes on from the oldest record still there, and says so), and is never terminated by an error of its own.
    """

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[list[bytes]], None],
        on_cancel: Callable[[PartitionListener], None],
    ) -> None:
        self.name = name
        self._loop = loop
        self._deliver = deliver
        self._on_cancel = on_cancel
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._scheduled = False
        self.closed = False
        # Bookkeeping, read by tests and the log.
        self.last_sequence = -1
        self.received = 0
        self.skipped = 0
        self.hops = 0

    # -- called on the client's thread ---------------------------------------------------------------------
    def on_message(self, message: TopicMessage[Any]) -> None:
        record = as_record(message.message)
        if record is None:
            self.skipped += 1
            log.warning(
                "Skipped a %s message on reliable topic %s: records are byte arrays",
                type(message.message).__name__,
                self.name,
            )
            return
        with self._lock:
            if self.closed:
                return
            self.received += 1
            self._buffer.append(record)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.closed = True

    def retrieve_initial_sequence(self) -> int:
        return -1  # from the next record published: consume() starts at the end

    def store_sequence(self, sequence: int) -> None:
        self.last_sequence = sequence

    def is_loss_tolerant(self) -> bool:
        # Asked only when records were lost: mesh traffic is transient RPC guarded by caller timeouts.
        log.warning(
            "Records lost on reliable topic %s: this app fell behind its ringbuffer, which overwrote them",
            self.name,
        )
        return True

    def is_terminal(self, error: Exception) -> bool:
        return False

    def on_cancel(self) -> None:
        # Called when the client drops the listener: our own remove_listener, client shutdown, or an error
        # the client could not get past (e.g. a payload it cannot deserialise).
        if self.closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._on_cancel, self)
        except RuntimeError:
            self.closed = True

    # -- on the loop ---------------------------------------------------------------------------------------
    def _drain(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
            self._scheduled = False
        if batch and not self.closed:
            self.hops += 1
            self._deliver(batch)

    def close(self) -> None:
        """No delivery after this, not even of records already handed over."""
        with self._lock:
            self.closed = True
            self._buffer = []


class HazelcastSubscription:
    """One partition consumed from its end; `close()` removes the listener, and delivery stops at once."""

    def __init__(
        self,
        topic: str,
        partition: int,
        reliable_topic: ReliableTopic[Any],
        on_record: RecordHandler,
        loop: asyncio.AbstractEventLoop,
        client_running: Callable[[], bool] = lambda: True,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.name = reliable_topic.name
        self._reliable_topic = reliable_topic
        self._on_record = on_record
        self._loop = loop
        self._client_running = client_running
        self._listener: PartitionListener | None = None
        self._registration: str | None = None
        self._retry: asyncio.Task[None] | None = None
        self._closed = False
        self._on_close: list[Callable[[HazelcastSubscription], None]] = []

    @property
    def listener(self) -> PartitionListener | None:
        return self._listener

    async def start(self, timeout: float) -> None:
        """Returns once the listener is registered at the partition's end."""
        await self._listen(timeout)

    async def _listen(self, timeout: float) -> None:
        listener = PartitionListener(self.name, self._loop, self._deliver, self._cancelled_by_client)
        try:
            registering = self._reliable_topic.add_listener(listener)
        except Exception as exc:
            raise ConnectorError(f"cannot consume {self.topic}[{self.partition}]: {exc}") from exc
        waiter = bridge(registering, self._loop)
        try:
            async with asyncio.timeout(timeout):
                registration = await asyncio.shield(waiter)
        except (TimeoutError, asyncio.CancelledError) as exc:
            listener.close()
            # Registered later after all: remove it then.
            waiter.add_done_callback(self._remove_late)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ConnectorError(
                f"cannot consume {self.topic}[{self.partition}]: no answer within {timeout:g} s"
            ) from None
        except Exception as exc:
            listener.close()
            raise ConnectorError(f"cannot consume {self.topic}[{self.partition}]: {exc}") from exc
        if self._closed:  # closed while registering
            listener.close()
            self._reliable_topic.remove_listener(registration)
            return
        self._listener, self._registration = listener, registration

    def _remove_late(self, waiter: asyncio.Future[str]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            try:
                self._reliable_topic.remove_listener(waiter.result())
            except Exception:
                log.debug("removing a late listener from %s failed", self.name, exc_info=True)

    def _deliver(self, records: list[bytes]) -> None:
        # On the loop; a batch handed over before close() is dropped.
        for record in records:
            if self._closed:
                return
            try:
                self._on_record(record)
            except Exception:
                log.exception("record handler for %s[%d] failed", self.topic, self.partition)

    def _cancelled_by_client(self, listener: PartitionListener) -> None:
        # On the loop: the client dropped a listener we did not remove (its log says why).
        if self._closed or listener is not self._listener or self._retry is not None:
            return
        listener.close()
        if not self._client_running():
            log.warning("Listener on reliable topic %s stopped: the Hazelcast client is shut down", self.name)
            return
        log.warning(
            "Listener on reliable topic %s stopped by the Hazelcast client; listening again from the end",
            self.name,
        )
        self._retry = self._loop.create_task(self._relisten(), name=f"meshkit:hazelcast:relisten:{self.name}")

    async def _relisten(self) -> None:
        pause = _RETRY_FIRST
        try:
            while not self._closed and self._client_running():
                await asyncio.sleep(pause)
                try:
                    await self._listen(timeout=max(pause, 5.0))
                    log.info("Listening again on reliable topic %s", self.name)
                    return
                except ConnectorError as exc:
                    log.warning("%s; trying again in %.1f s", exc, min(pause * 2, _RETRY_MAX))
                    pause = min(pause * 2, _RETRY_MAX)
        finally:
            self._retry = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for callback in self._on_close:
            callback(self)
        retry = self._retry
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
        listener, registration = self._listener, self._registration
        self._listener = self._registration = None
        if listener is not None:
            listener.close()
        if registration is not None:
            try:
                await bridge(self._reliable_topic.remove_listener(registration), self._loop)
            except Exception:
                # The client is already shutting down: the listener goes with it.
                log.debug("removing the listener from %s failed", self.name, exc_info=True)
