"""The event transport: envelopes and control messages over a connector, one partition per app instance."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from meshkit.connectors import Connector, Subscription
from meshkit.core import (
    Address,
    AppError,
    CodecError,
    EventEnvelope,
    LocalBus,
    decode,
    decode_pieces,
    encode,
    encode_split,
    envelope_from_map,
    stamp,
)
from meshkit.mesh._frames import (
    EVERYONE,
    RECIPIENT,
    FrameError,
    Reassembler,
    batch_record,
    control_record,
    event_record,
    event_records,
    parse,
    segment_records,
)
from meshkit.mesh._loopback import Loopback
from meshkit.mesh._topics import TopicLayout, VirtualTopic

log = logging.getLogger("meshkit.mesh.transport")

# a guarded route's caller that joined a moment ago may not be known here yet (access.md): its request waits
CALLER_WAIT = 2.0  # seconds, at most
CALLER_POLL = 0.05
MAX_AWAITING_CALLERS = 1000  # requests; more are judged at once

ControlHandler = Callable[[dict[str, Any]], None]


class EventTransport:
    """Sends events to a peer's virtual topic and delivers what arrives on this app's own partition."""

    def __init__(
        self,
        bus: LocalBus,
        connector: Connector,
        *,
        segment_size: int,
        max_event_bytes: int,
        on_control: ControlHandler,
        layout: TopicLayout,
    ) -> None:
        self.bus = bus
        self.connector = connector
        self.segment_size = segment_size
        self.max_event_bytes = max_event_bytes
        self.on_control = on_control
        self.layout = layout
        self.topic: VirtualTopic | None = None
        self.return_addresses: dict[str, VirtualTopic] = {}  # origin -> topic, learnt from incoming events
        self._reassembler = Reassembler(max_event_bytes)
        self._own: Subscription | None = None
        self._shared: dict[tuple[str, int], Subscription] = {}
        self._loopback = Loopback("loopback")
        self._sending: set[asyncio.Future[None]] = set()
        # records waiting for the end of this loop turn, by destination: the event each carries, and whether
        # the recipient takes batch records
        self._outgoing: dict[VirtualTopic, list[tuple[bytes, EventEnvelope, bool]]] = {}
        self._flush_scheduled = False
        self.received = self.sent = self.skipped = 0
        self.received_direct = 0  # events that came over a direct link (meshkit/mesh/_link.py) instead
        # sets an event's proven caller from its link or its proof (meshkit/mesh/_callers.py); False when it
        # may wait for a caller not known yet
        self.identify: Callable[[EventEnvelope, str | None, bool], bool] = lambda event, via, patient: True
        self._awaiting = 0  # requests waiting for their caller to be known

    # -- subscriptions -------------------------------------------------------------------------------------
    async def listen(self, topic: VirtualTopic) -> None:
        """Consume this app's own partition (closing the one held before, if it changed)."""
        if self.topic == topic and self._own is not None:
            return
        if self._own is not None:
            await self._own.close()
            self._own = None
        self._own = await self.connector.consume(topic.topic, topic.partition, self.receive)
        self.topic = topic
        log.info("Subscribed %s", topic)

    async def listen_shared(self, topic: str, partition: int) -> None:
        """Consume a partition that several apps share (the closed user group's control channel)."""
        if (topic, partition) not in self._shared:
            self._shared[(topic, partition)] = await self.connector.consume(
                topic, partition, self.receive, latency="control"
            )
            log.info("%s, partition %d ready", topic, partition)

    async def close(self) -> None:
        self._flush()
        subscriptions = [s for s in (self._own, *self._shared.values()) if s is not None]
        self._own, self._shared = None, {}
        for subscription in subscriptions:
            await subscription.close()
        if self._sending:
            await asyncio.wait(self._sending, timeout=2.0)

    # -- sending -------------------------------------------------------------------------------------------
    @property
    def pending_sends(self) -> int:
        """Records handed to the connector and not yet acknowledged by the broker."""
        return len(self._sending)

    def send_event(
        self, topic: VirtualTopic, recipient: str, event: EventEnvelope, *, batch: bool = False
    ) -> None:
        """Encode now (errors surface to the caller), publish at the end of the loop turn.

        `batch`: the recipient takes batch records, so what goes to its partition in this turn may go as one.
        """
        if event.trace_id is not None:
            stamp(event)  # the sending function's span and route ride along
        reply = self.reply_topic()
        try:
            body = event.body
            # a body already larger than a segment skips the one-record attempt (a wasted pack of it all)
            large = isinstance(body, bytes | str | bytearray) and len(body) > self.segment_size
            records = [] if large else [event_record(recipient, event, reply)]
            if large or len(records[0]) > self.segment_size:  # large: the envelope's bytes, in segments
                # a bytes/str body is cut straight into the segments, after the envelope's head
                pieces = encode_split(event) or (encode(event),)
                size = sum(len(piece) for piece in pieces)
                if size > self.max_event_bytes:
                    limit = self.max_event_bytes
                    raise AppError(413, f"Event of {size} bytes exceeds max.event.size={limit}")
                if size > self.segment_size:
                    records = segment_records(recipient, pieces, self.segment_size, reply)
                else:  # only the one-record wrapper was too much: the envelope's bytes in one record
                    records = event_records(recipient, b"".join(pieces), self.segment_size, reply)
        except CodecError as exc:
            raise AppError(500, str(exc)) from exc
        pending = self._outgoing.get(topic)
        if pending is None:
            pending = self._outgoing[topic] = []
        pending.extend((record, event, batch) for record in records)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Publish what this loop turn sent: small records to an app that takes batches go as one."""
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for topic, entries in outgoing.items():
            records: list[bytes] = []
            events: list[EventEnvelope] = []
            size, joinable = 0, False  # joinable: what is held may take more records
            for record, event, batchable in entries:
                # a batch stays within one segment's size; a record that size or more goes alone
                if records and not (joinable and batchable and size + len(record) <= self.segment_size):
                    self._publish(topic, records, events)
                    records, events, size = [], [], 0
                records.append(record)
                events.append(event)
                size += len(record)
                joinable = batchable
            if records:
                self._publish(topic, records, events)

    def _publish(self, topic: VirtualTopic, records: list[bytes], events: list[EventEnvelope]) -> None:
        record = records[0] if len(records) == 1 else batch_record(records)
        waiter = self.connector.publish(topic.topic, topic.partition, record)
        self._sending.add(waiter)
        waiter.add_done_callback(functools.partial(self._published, topic, events))

    def reply_topic(self) -> str | None:
        """This app's virtual topic, where replies reach it over the broker (None before it has one)."""
        return self.topic.name if self.topic is not None else None

    def _published(
        self, topic: VirtualTopic, events: list[EventEnvelope], waiter: asyncio.Future[None]
    ) -> None:
        self._sending.discard(waiter)
        if waiter.cancelled():
            return
        error = waiter.exception()
        if error is None:
            self.sent += len(events)
            return
        for event in events:  # distinct: only an event's last, short segment can share a batch
            log.warning("Event %s to %s not delivered: %s", event.id, topic, error)
            self._fail_pending(event, f"Unable to deliver {event.to} through {topic}: {error}")

    def _fail_pending(self, event: EventEnvelope, message: str) -> None:
        # a request of ours that never left: answer it now rather than let it wait for its timeout
        if event.reply_to == self.bus.inbox and event.cid is not None:
            self.bus.deliver_reply(EventEnvelope(self.bus.inbox, message, status=503, cid=event.cid))

    async def publish_control(
        self, topic: str, partition: int, recipient: str, message: dict[str, Any]
    ) -> None:
        await self.connector.publish(topic, partition, control_record(recipient, message))

    async def loopback(self, timeout: float = 5.0) -> float:
        """Milliseconds for a record to travel through the broker and back to this app's own partition."""
        if self.topic is None:
            raise AppError(503, "Not connected to the mesh yet: no virtual topic assigned")
        topic = self.topic

        def send(probe: dict[str, str]) -> Awaitable[None]:
            return self.publish_control(topic.topic, topic.partition, self.bus.origin, probe)

        return await self._loopback.run(send, timeout)

    # -- receiving -----------------------------------------------------------------------------------------
    def receive(self, record: bytes, via: str | None = None, *, inner: bool = False) -> None:
        """Deliver a record from the broker, or (`via`: the peer's origin, proven when its link was
        admitted) from a peer's direct link."""
        try:
            frame = parse(record)
            if frame["type"] == "batch":
                if inner:
                    raise FrameError("a batch record inside a batch")
                self._on_batch(frame, via)
                return
            recipient = frame[RECIPIENT]
            if recipient != self.bus.origin and recipient != EVERYONE:
                self.skipped += 1
                log.debug("Skipped a record for %s (not this app)", recipient)
                return
            self._deliver(frame, via)
        except (FrameError, CodecError) as exc:
            self.skipped += 1
            log.warning("Skipped an undecodable record (%d bytes): %s", len(record), exc)
        except AppError as exc:
            log.warning("Event not delivered: %s", exc.message)
        except Exception:  # a bad record must never stop the consumer
            self.skipped += 1
            log.exception("Skipped a record that failed in delivery")

    def _on_batch(self, frame: dict[str, Any], via: str | None) -> None:
        records = frame.get("records")
        if not isinstance(records, list):
            raise FrameError("batch record without a list of records")
        for record in records:  # each on its own: one bad record costs only itself
            if isinstance(record, bytes):
                self.receive(record, via, inner=True)
            else:
                self.skipped += 1
                log.warning("Skipped a %s in a batch record (records are bytes)", type(record).__name__)

    def _deliver(self, frame: dict[str, Any], via: str | None) -> None:
        kind = frame["type"]
        if kind == "event" or kind == "segment":
            embedded = frame.get("event")
            if isinstance(embedded, dict):
                event = envelope_from_map(embedded)
            else:
                if kind == "segment":
                    pieces = self._reassembler.add_pieces(frame)
                    if pieces is None:
                        return
                    event = decode_pieces(pieces)  # the body joined once, straight from the segments
                else:
                    payload = frame.get("payload")
                    if payload is None:
                        return
                    if not isinstance(payload, bytes):
                        raise FrameError("event record without an envelope")
                    event = decode(payload)
            self._remember_sender(event, frame.get("reply"))
            if via is not None:
                self.received_direct += 1
            else:
                self.received += 1
            if event.to == self.bus.inbox:
                self.bus.resolve_reply(event)
                return
            if via is not None or event.proof is not None:
                if not self.identify(event, via, self._awaiting < MAX_AWAITING_CALLERS):
                    self._await_caller(event, via)
                    return
            self._dispatch(event)
        elif kind == "control":
            message = frame.get("payload")
            if not isinstance(message, dict):
                raise FrameError("control record without a map")
            if message.get("type") == "loopback":
                self._loopback.arrived(message.get("id"))
                return
            self.on_control(message)
        else:
            raise FrameError(f"unknown record type {kind!r}")

    def _dispatch(self, event: EventEnvelope) -> None:
        try:
            self.bus.dispatch(event, external=True)
        except AppError as exc:
            self._refuse(event, exc)

    def _await_caller(self, event: EventEnvelope, via: str | None) -> None:
        """A guarded route's caller this app does not know yet: ask again every CALLER_POLL seconds, for at
        most CALLER_WAIT (then it is judged as it stands: 403 if still unknown)."""
        loop = asyncio.get_running_loop()
        self._awaiting += 1

        def again(left: float) -> None:
            if self.identify(event, via, left > 0):
                self._awaiting -= 1
                self._dispatch(event)
            else:
                loop.call_later(CALLER_POLL, again, left - CALLER_POLL)

        loop.call_later(CALLER_POLL, again, CALLER_WAIT - CALLER_POLL)

    def _remember_sender(self, event: EventEnvelope, reply_topic: object) -> None:
        if not isinstance(reply_topic, str) or not event.reply_to:
            return
        route, origin = Address.parse(event.reply_to)
        if not route and origin is not None:  # an inbox: the sender awaits the reply at reply_topic
            known = self.return_addresses.get(origin)
            if known is None or known.name != reply_topic:
                try:
                    self.return_addresses[origin] = self.layout.parse(reply_topic)
                except ValueError:
                    log.warning("Ignored a bad return address %r from %s", reply_topic, origin)

    def _refuse(self, event: EventEnvelope, error: AppError) -> None:
        """Answer a request that cannot be served here (unknown or private route) with the error."""
        log.warning("Refused event %s for %s: %s", event.id, event.to, error.message)
        if event.reply_to:
            reply = EventEnvelope(
                event.reply_to, error.message, status=error.status, cid=event.cid, sender=self.bus.name
            )
            self.bus.deliver_reply(reply)
