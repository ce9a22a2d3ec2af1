"""An EventTransport between stubs: a platform that keeps what it is given, a connector that keeps records."""

from __future__ import annotations

import asyncio

from meshkit import EventEnvelope
from meshkit.connectors import ConnectorError
from meshkit.mesh import TopicLayout
from meshkit.mesh._transport import EventTransport


class StubPlatform:
    """What send_event and _on_record use of a platform; events and replies land in lists."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.inbox = "@" + origin
        self.events: list[EventEnvelope] = []
        self.replies: list[EventEnvelope] = []

    def resolve_reply(self, event: EventEnvelope) -> None:
        self.events.append(event)

    def dispatch(self, event: EventEnvelope, external: bool = False) -> None:
        self.events.append(event)

    def deliver_reply(self, reply: EventEnvelope) -> None:
        self.replies.append(reply)

    def note_target(self, event: EventEnvelope, origin: str) -> None:
        """(The platform remembers where a request went; the stub has no requests to fail.)"""


class StubConnector:
    """Keeps every published record with its destination; `refuse` makes every publish fail."""

    def __init__(self, refuse: str | None = None) -> None:
        self.records: list[bytes] = []
        self.destinations: list[tuple[str, int]] = []
        self.refuse = refuse

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        self.records.append(payload)
        self.destinations.append((topic, partition))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse is None:
            fut.set_result(None)
        else:
            fut.set_exception(ConnectorError(self.refuse))
        return fut


def stub_transport(platform: StubPlatform, connector: StubConnector) -> EventTransport:
    return EventTransport(
        platform,  # type: ignore[arg-type]  # a stub with what send_event and _on_record use
        connector,  # type: ignore[arg-type]
        segment_size=65536,
        max_event_bytes=1 << 20,
        on_control=lambda message: None,
        layout=TopicLayout(),
    )
