"""An app's membership of the mesh: connector, transport, routing table and presence, wired together."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from meshkit._config import AppConfig, ConfigError
from meshkit._functions import AppError, FunctionSpec
from meshkit._platform import Platform
from meshkit._security import MeshKeys
from meshkit.connectors import Connector
from meshkit.mesh._frames import DEFAULT_SEGMENT_SIZE, EVERYONE, FrameError
from meshkit.mesh._presence import PresenceClient
from meshkit.mesh._table import MeshRouter, Peer, RoutingTable
from meshkit.mesh._topics import DEFAULT_MAX_GROUPS, MONITOR_TOPIC, TopicLayout
from meshkit.mesh._transport import EventTransport
from meshkit.mesh._watchdog import ConnectorWatchdog

log = logging.getLogger("meshkit.mesh")

HEALTH_ROUTE = "cloud.connector.health"
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


def mesh_settings(config: AppConfig) -> tuple[TopicLayout, int, int]:
    """(topic layout, this app's closed user group, how many groups) from configuration, checked."""
    layout = TopicLayout(
        config.get_int("app.partitions.per.topic", 32), config.get_int("max.virtual.topics", 288)
    )
    if not 1 <= layout.partitions_per_topic <= 1000 or not 1 <= layout.max_virtual_topics <= 9999:
        raise ConfigError("app.partitions.per.topic must be 1..1000 and max.virtual.topics 1..9999")
    groups = config.get_int("max.closed.user.groups", DEFAULT_MAX_GROUPS)
    group = config.get_int("closed.user.group", 1)
    if not 1 <= group <= groups:
        raise ConfigError(f"closed.user.group={group} must be between 1 and max.closed.user.groups={groups}")
    return layout, group, groups


class MeshNode:
    def __init__(self, platform: Platform, connector: Connector) -> None:
        config = platform.config
        self.platform = platform
        self.connector = connector
        self.layout, self.group, self.groups = mesh_settings(config)
        self.keys = MeshKeys(config)
        self.table = RoutingTable()
        self.transport = EventTransport(
            platform,
            connector,
            segment_size=config.get_int("segment.size", DEFAULT_SEGMENT_SIZE),
            max_event_bytes=config.get_int("max.event.size", DEFAULT_MAX_EVENT_BYTES),
            on_control=self._on_control,
            layout=self.layout,
        )
        self.router = MeshRouter(self.table, self.transport)
        urls = config.get_list("presence.url") or ["ws://127.0.0.1:8080/ws/presence"]
        self.presence = PresenceClient(
            platform,
            urls,
            group=self.group,
            keepalive=config.get_float("presence.keepalive", 2.0),
            on_ready=self._on_ready,
            headers=self.keys.headers(),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.watchdog = ConnectorWatchdog(
            f"The {connector.name} connector ({connector.href})",
            self._probe,
            interval=config.get_float("connector.watchdog.interval", 5.0),
            give_up_after=config.get_float("connector.watchdog.exit.after", 30.0),
        )

    async def start(self) -> None:
        await self.connector.start()
        await self.connector.ensure_topic(MONITOR_TOPIC, self.groups + 1)
        await self.transport.listen_shared(MONITOR_TOPIC, self.group)
        self.platform.remote = self.router
        self.platform.on_route_change(self._route_changed)
        if not self.platform.has_local(HEALTH_ROUTE):
            self.platform.register(HEALTH_ROUTE, self._health, private=True)
        await self.presence.start(self.platform.config.get_float("presence.wait", 10.0))
        self.watchdog.start()

    async def stop(self) -> None:
        await self.watchdog.stop()
        await self.presence.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self.platform.remote = None
        await self.transport.close()
        await self.connector.close()

    # -- presence ------------------------------------------------------------------------------------------
    async def _on_ready(self, topic_name: str, monitor: str) -> None:
        topic = self.layout.parse(topic_name)
        await self.connector.ensure_topic(topic.topic, self.layout.partitions_per_topic)
        await self.transport.listen(topic)
        log.info("%s, partition %d ready", topic.topic, topic.partition)
        await self._publish_group({"type": "join", **self._me(), "routes": self.platform.public_routes()})

    def _me(self) -> dict[str, Any]:
        p = self.platform
        topic = self.transport.topic
        return {
            "origin": p.origin,
            "name": p.name,
            "version": p.version,
            "personality": p.personality,
            "topic": topic.name if topic else None,
        }

    async def _publish_group(self, message: dict[str, Any]) -> None:
        await self.transport.publish_control(MONITOR_TOPIC, self.group, EVERYONE, self.keys.sign(message))

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("Mesh control message not sent: %s", task.exception())

    def _route_changed(self, spec: FunctionSpec, added: bool) -> None:
        if spec.private or self.transport.topic is None:
            return
        change = {"add" if added else "remove": [spec.route]}
        self._background(self._publish_group({"type": "routes", "origin": self.platform.origin, **change}))

    # -- control messages from peers and monitors ----------------------------------------------------------
    def _on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        origin = message.get("origin")
        if not self.keys.verify(message):
            log.warning("Refused a %s control message for %s: missing or bad signature", kind, origin)
            return
        if not isinstance(origin, str) or origin == self.platform.origin:
            return
        if kind in ("join", "peer"):
            peer = self._peer(message)
            self.table.join(peer)
            if kind == "join" and self.transport.topic is not None:
                me = {"type": "peer", **self._me(), "routes": self.platform.public_routes()}
                self._background(
                    self.transport.publish_control(
                        peer.topic.topic, peer.topic.partition, peer.origin, self.keys.sign(me)
                    )
                )
        elif kind == "leave":
            gone = self.table.leave(origin)
            self.transport.return_addresses.pop(origin, None)
            name = f"{gone.name} {gone.version}" if gone else "an app that left"
            failed = self.platform.fail_requests_to(origin, f"Peer {origin} ({name}) left before replying")
            if failed:
                log.warning("%d request%s to %s failed: it left", failed, "" if failed == 1 else "s", origin)
        elif kind == "routes":
            self.table.update(
                origin, add=set(_routes(message.get("add"))), remove=set(_routes(message.get("remove")))
            )
        else:
            raise FrameError(f"unknown control message {kind!r}")

    def _peer(self, message: dict[str, Any]) -> Peer:
        fields = {k: message.get(k) for k in ("origin", "name", "version", "personality", "topic")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise FrameError("join without origin, name, version, personality and topic")
        try:
            topic = self.layout.parse(str(fields["topic"]))
        except ValueError as exc:
            raise FrameError(str(exc)) from exc
        return Peer(
            str(fields["origin"]),
            str(fields["name"]),
            str(fields["version"]),
            str(fields["personality"]),
            topic,
            set(_routes(message.get("routes"))),
        )

    # -- cloud.connector.health ----------------------------------------------------------------------------
    async def _probe(self) -> None:
        # a loopback through our own partition once we have one: it fails when the broker lost the topic
        if self.transport.topic is not None:
            await self.transport.loopback()
        else:
            await self.connector.list_topics()

    async def _health(self, headers: dict[str, str], body: Any, instance: int) -> Any:
        if headers.get("type") == "info":
            return {"service": self.connector.name, "href": self.connector.href, "topics": "on-demand"}
        if not self.presence.connected.is_set():
            raise AppError(503, "Not connected to a presence monitor")
        took = await self.transport.loopback()
        return f"Loopback test took {took:.0f} ms"


def _routes(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise FrameError("routes must be a list of strings")
    return value
