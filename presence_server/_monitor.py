"""The presence monitor's work: websockets in, virtual topics out, the mesh told of joins and leaves.

The websocket messages are in docs/protocol/presence.md, the monitors' log in docs/protocol/control.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from meshkit import Platform
from meshkit.connectors import Connector, ConnectorError, Subscription
from meshkit.core import iso_utc_ms
from meshkit.mesh import (
    EVERYONE,
    MONITOR_TOPIC,
    ConnectorWatchdog,
    FrameError,
    Loopback,
    TopicLayout,
    control_record,
    parse,
)
from meshkit.security import KEY_HEADER, MeshKeys, ReplayGuard, Stamp
from presence_server._cards import CardTexts
from presence_server._claims import TopicClaims
from presence_server._hello import Refused, check_card, keep_alive_seq, read_hello
from presence_server._info import mesh_summary
from presence_server._sessions import Notice, Session, Sessions, frames
from presence_server._state import ClaimResult, Connection, MeshState

log = logging.getLogger("presence_server")
INFO_TOPICS_WAIT = 2.0  # seconds /info waits for the broker's topic list (a cut broker never answers)
SNAPSHOT_PART = 200  # connections per snapshot record: a record's size does not grow with the mesh


class PresenceMonitor:
    def __init__(self, platform: Platform, connector: Connector, layout: TopicLayout, groups: int) -> None:
        config = platform.config
        self.platform = platform
        self.connector = connector
        self.layout = layout
        self.groups = groups
        self.id = platform.origin
        self.heartbeat = config.get_float("monitor.heartbeat", 1.0)
        self.monitor_timeout = config.get_float("monitor.timeout", 3.0)
        self.keepalive_timeout = config.get_float("presence.timeout", 8.0)
        self.orphan_grace = config.get_float("monitor.orphan.grace", 10.0)
        self.keys = MeshKeys(config)
        # the monitors' log has its own secret, so that an app holding the mesh key cannot write it
        secret = MeshKeys(config, "mesh.monitor.secret")
        self.log_keys = secret if secret.required else self.keys
        if self.keys.required and not secret.required:
            log.warning(
                "mesh.monitor.secret is not set: any app holding the mesh API key can write the monitors' "
                "log (%s partition 0)",
                MONITOR_TOPIC,
            )
        self.state = MeshState(layout.max_virtual_topics)
        self.texts = CardTexts(self.state, layout)
        self.sessions = Sessions(self.texts.body)
        self.claims = TopicClaims(self.id, self.state, layout, self._publish, self.monitor_timeout)
        self._loopback = Loopback(self.id)
        self._stamp, self._replays = Stamp(), ReplayGuard()  # the log is replay-proof too (signing.md)
        self._subscription: Subscription | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._started = time.monotonic()
        self.watchdog = ConnectorWatchdog(
            f"The {connector.name} connector ({connector.href})",
            self.loopback,
            interval=config.get_float("connector.watchdog.interval", 5.0),
            give_up_after=config.get_float("connector.watchdog.exit.after", 30.0),
        )

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.connector.start()
        await self.connector.ensure_topic(MONITOR_TOPIC, self.groups + 1)
        self._subscription = await self.connector.consume(MONITOR_TOPIC, 0, self._on_record)
        log.info("%s, partition 0 ready", MONITOR_TOPIC)
        await self._publish({"type": "monitor", "id": self.id, "time": _now()})
        await self._publish({"type": "sync", "from": self.id})
        with contextlib.suppress(TimeoutError):  # alone in the mesh: nobody answers
            await asyncio.wait_for(self._synced.wait(), 2 * self.heartbeat)
        self._synced.set()
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="presence:housekeeping")
        self.watchdog.start()
        log.info("Registered monitor (me) %s", self.id)

    async def stop(self) -> None:
        await self.watchdog.stop()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        for session in list(self.sessions.values()):
            # going away, not leaving: the apps move to another monitor and keep their topics
            with contextlib.suppress(Exception):
                await session.websocket.close(1001, "monitor stopping")
        with contextlib.suppress(ConnectorError):
            await self._publish({"type": "bye", "id": self.id})
        if self._subscription is not None:
            await self._subscription.close()
        await self.connector.close()

    async def _publish(self, message: dict[str, Any]) -> None:
        stamped = self._stamp({**message, "by": self.id})
        await self.connector.publish(MONITOR_TOPIC, 0, control_record(EVERYONE, self.log_keys.sign(stamped)))

    # -- the websocket -------------------------------------------------------------------------------------
    async def serve(self, websocket: WebSocket, origin: str) -> None:
        await websocket.accept()
        client = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "unknown"
        if not self.keys.accepts(websocket.headers.get(KEY_HEADER)):
            log.warning(
                "Refused presence of %s from %s: missing or invalid mesh API key", origin[:80], client
            )
            with contextlib.suppress(Exception):
                message = f"missing or invalid mesh API key ({KEY_HEADER} header)"
                await websocket.send_text(json.dumps({"type": "error", "message": message}))
                await websocket.close(4401, "missing or invalid mesh API key")
            return
        try:
            hello = await read_hello(websocket, origin, self.groups)
            topic = await self._admit(origin, hello)
        except Refused as exc:
            log.warning("Refused presence of %s from %s: %s", origin[:80], client, exc)
            with contextlib.suppress(Exception):
                await websocket.send_text(json.dumps({"type": "error", "message": str(exc)}))
                # a close reason is at most 123 bytes of UTF-8: keep it short and ASCII
                await websocket.close(1008, str(exc).encode("ascii", "replace").decode()[:120])
            return
        except WebSocketDisconnect:
            log.info("Presence of %r from %s ended before its hello was answered", origin[:80], client)
            return
        group, cards = hello["group"], hello.get("cards") is True
        session = Session(websocket, time.monotonic(), group, updated=_now(), cards=cards, key=hello["key"])
        self.sessions[origin] = session
        name = self.layout.virtual(topic).name
        reason, leaving = "closed", True
        notifier: asyncio.Task[None] | None = None
        try:
            if cards:  # the group's cards follow its ready, before any notice
                ready, listed = self.texts.ready(name, self.id, group, origin)
                await websocket.send_text(ready)
                for frame in frames(listed, self.texts.body):
                    await websocket.send_text(frame)
            else:
                members = {
                    o: c.key for o, c in self.state.connections.items() if c.group == group and o != origin
                }
                ready_map = {"type": "ready", "topic": name, "monitor": self.id, "members": members}
                await websocket.send_text(json.dumps(ready_map))
            for other in self.state.connections.values():  # who of its group is stopping, after `members`
                if other.draining and other.group == group and other.origin != origin:
                    session.notices.put_nowait(
                        (json.dumps({"type": "draining", "origin": other.origin}), None)
                    )
            if hello.get("draining") is True:  # it was draining when it moved here from another monitor
                self._drain(origin)
            log.info(
                "Member %s joined (%s %s) from %s, %s", origin, hello["name"], hello["version"], client, name
            )
            notifier = asyncio.create_task(session.send_notices(), name=f"presence:notices:{origin}")
            while True:
                self._on_message(session, origin, await websocket.receive())
        except WebSocketDisconnect as exc:
            reason = f"closed ({exc.code})"
            # 1001/1012: this monitor is going away, not the app: it moves to another monitor, keeping its
            # topic; if it never reappears, the surviving monitors release it
            leaving = exc.code not in (1001, 1012)
        except Exception as exc:  # a broken socket ends the session, never the monitor
            reason = f"failed ({type(exc).__name__})"
        finally:
            if notifier is not None:
                notifier.cancel()
            if self.sessions.get(origin) is session:
                del self.sessions[origin]
                connection = self.state.connections.get(origin)
                if leaving and connection is not None and connection.monitor == self.id:
                    with contextlib.suppress(ConnectorError):
                        await self._publish(
                            {
                                "type": "leave",
                                "origin": origin,
                                "monitor": self.id,
                                "owner": self.id,
                                "reason": reason,
                            }
                        )

    async def _admit(self, origin: str, hello: dict[str, Any]) -> int:
        if origin in self.sessions:
            raise Refused(f"origin {origin} is already connected")
        topic = await self.claims.admit(origin, hello, self.monitor_timeout + self.heartbeat)
        await self.connector.ensure_topic(self.layout.virtual(topic).topic, self.layout.partitions_per_topic)
        return topic

    def _on_message(self, session: Session, origin: str, message: Mapping[str, Any]) -> None:
        if message.get("type") == "websocket.disconnect":
            raise WebSocketDisconnect(int(message.get("code") or 1000))
        try:
            data = json.loads(message.get("text") or "")
            if isinstance(data, dict) and data.get("type") == "drain":
                session.last_seen = time.monotonic()
                self._drain(origin)
                return
            if isinstance(data, dict) and data.get("type") == "card":
                session.last_seen = time.monotonic()
                self._new_card(session, origin, data)
                return
            seq = keep_alive_seq(data)
        except ValueError:  # not a sign of life: a client that sends only this is dropped at the timeout
            log.warning("Ignored a malformed presence message from %s", origin)
            return
        session.last_seen = time.monotonic()
        session.seq, session.updated = seq, _now()

    def _drain(self, origin: str) -> None:
        """The app is stopping: its group here hears it now, the other monitors' apps through the log."""
        connection = self.state.drain(origin, self.id)
        if connection is None:
            return
        log.info("Member %s (%s %s) is draining", origin, connection.name, connection.version)
        self._notify(connection.group, origin, {"type": "draining", "origin": origin})
        self._spawn(self._publish({"type": "drain", "origin": origin, "monitor": self.id}))

    def _new_card(self, session: Session, origin: str, data: dict[str, Any]) -> None:
        """The app's card changed (its routes): every monitor keeps the new one and tells the group."""
        try:
            if not check_card(data, origin, session.key):
                raise ValueError("no card in it")
        except ValueError as exc:
            log.warning("Ignored a card from %s: %s", origin, exc)
            return
        card = {"type": "card", "origin": origin, "monitor": self.id, "card": data["card"]}
        self._spawn(self._publish({**card, "contracts": data.get("contracts")}))

    # -- the log of service.monitor partition 0 ------------------------------------------------------------
    def _on_record(self, record: bytes) -> None:
        try:
            frame = parse(record)
            message = frame.get("payload")
            if frame["type"] != "control" or not isinstance(message, dict):
                raise FrameError("not a control message")
            if not self.log_keys.verify(message):
                raise FrameError(f"a {message.get('type')!r} message without a valid signature")
            replayed = self._replays.check(str(message.get("by")), message)
            if replayed is not None:
                raise FrameError(f"a {message.get('type')!r} message refused as a replay: {replayed}")
            if isinstance(message.get("by"), str):
                self.state.heard_from(message["by"])
            self._apply(message)
        except Exception as exc:  # a record from the broker is input: skipped, never fatal
            log.warning(
                "Skipped a bad record on %s partition 0: %s", MONITOR_TOPIC, exc or type(exc).__name__
            )

    def _apply(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "claim":
            self._claimed(self.state.claim(message), str(message["monitor"]))
        elif kind == "leave":
            owner = message.get("owner")
            left = self.state.leave(str(message["origin"]), str(owner) if owner is not None else None)
            self._left(left, str(message.get("reason") or "left")[:200])
        elif kind == "drain" and message.get("monitor") != self.id:
            connection = self.state.drain(str(message["origin"]), str(message["monitor"]))
            if connection is not None:
                notice = {"type": "draining", "origin": connection.origin}
                self._notify(connection.group, connection.origin, notice)
        elif kind == "monitor":
            self.state.heartbeat(message)
        elif kind == "bye":
            self.state.monitor_gone(str(message["id"]), self.monitor_timeout)
        elif kind == "card":
            self._changed(self.state.card(message))
        elif kind == "sync" and message.get("from") != self.id and self._synced.is_set():
            parts = self.state.snapshots(SNAPSHOT_PART)
            for n, part in enumerate(parts, start=1):  # "more": parts follow (a monitor syncs on the last)
                snapshot = {
                    "type": "snapshot",
                    "to": message.get("from"),
                    "state": part,
                    "more": n < len(parts),
                }
                self._spawn(self._publish(snapshot))
        elif kind == "snapshot" and message.get("to") == self.id:
            self.state.merge(message["state"])
            if message.get("more") is not True:
                self._synced.set()
        elif kind == "loopback":
            self._loopback.arrived(message.get("id"))

    def _claimed(self, result: ClaimResult, monitor: str) -> None:
        if result.released is not None:
            log.info("%s released by %s (moved)", self.layout.virtual(result.released), result.origin)
        self._changed(self.state.connections.get(result.origin) if result.won else None)
        if monitor == self.id:
            self.claims.resolve(result)

    def _changed(self, connection: Connection | None) -> None:
        """Vouch for the app's key to our apps of its group, and hand them its card: they take it now."""
        if connection is not None:
            self.texts.forget(connection.origin)
            member, plain = self.texts.member(connection), self.texts.plain_member(connection)
            self.sessions.notify(
                connection.group, connection.origin, member, self._disconnect_slow_reader, plain
            )

    def _left(self, connection: Connection | None, reason: str) -> None:
        if connection is None:
            return
        log.info("Member %s left", connection.origin)
        log.info(
            "%s released by %s, %s, %s",
            self.layout.virtual(connection.topic),
            connection.origin,
            connection.name,
            connection.version,
        )
        # every monitor tells its own apps of the group; an app moving between monitors gets the list again
        self.texts.forget(connection.origin)
        notice = {"type": "gone", "origin": connection.origin, "reason": reason}
        self._notify(connection.group, connection.origin, notice)
        session = self.sessions.get(connection.origin)
        if session is not None:  # released while connected here (a split brain healed): it must claim again
            log.warning(
                "Member %s was released while connected here: asked to connect again", connection.origin
            )
            self._spawn(session.websocket.close(1012, "released by the mesh: connect again"))

    def _notify(self, group: int, about: str, notice: dict[str, Any] | Notice) -> None:
        text = (json.dumps(notice), None) if isinstance(notice, dict) else notice
        self.sessions.notify(group, about, text, self._disconnect_slow_reader)

    def _disconnect_slow_reader(self, session: Session) -> None:
        self._spawn(session.websocket.close(1013, "too many unread mesh notices"))

    def _spawn(self, coro: Any) -> None:
        asyncio.get_running_loop().create_task(coro).add_done_callback(_log_failure)

    # -- housekeeping --------------------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._tick()
            except Exception as exc:  # housekeeping must outlive any one bad round
                log.warning("Housekeeping: %s", exc or type(exc).__name__)

    async def _tick(self) -> None:
        seen = {o: [s.seq, s.updated] for o, s in self.sessions.items()}
        # not awaited: with the broker out of reach, keep-alives are still checked every round
        self._spawn(self._publish({"type": "monitor", "id": self.id, "time": _now(), "seen": seen}))
        now = time.monotonic()
        for origin, session in list(self.sessions.items()):
            if now - session.last_seen > self.keepalive_timeout:
                log.warning(
                    "Member %s sent no keep-alive for %.0f s: dropped", origin, now - session.last_seen
                )
                with contextlib.suppress(Exception):
                    await session.websocket.close(4000, "keep-alive timeout")
        if self.state.leader(self.monitor_timeout) != self.id:
            # not the leader; or not reading the log (not even our own heartbeat came back): cut off, we
            # cannot tell who is gone, and leaves written now would reach the log at the heal
            return
        # the leader releases the apps of monitors that died and whose apps did not come back
        cutoff = self.monitor_timeout + self.orphan_grace
        if now - self._started > cutoff:
            for connection in self.state.orphans(self.id, cutoff):
                owner = connection.monitor
                reason = f"monitor {owner} gone"
                await self._publish(
                    {
                        "type": "leave",
                        "origin": connection.origin,
                        "monitor": self.id,
                        "owner": owner,
                        "reason": reason,
                    }
                )
        for monitor in self.state.dead_monitors(cutoff):
            self.state.forget(monitor)
        self.texts.prune()

    # -- what the actuators show ---------------------------------------------------------------------------
    async def loopback(self, timeout: float = 5.0) -> float:
        return await self._loopback.run(self._publish, timeout)

    async def mesh_topics(self) -> dict[str, int]:
        topics = await self.connector.list_topics()
        return {t: n for t, n in sorted(topics.items()) if t == MONITOR_TOPIC or t.startswith("multiplex.")}

    async def additional_info(self) -> dict[str, Any]:
        """/info: the mesh as this monitor knows it; the broker's topic list only if it answers in time."""
        try:
            topics, warning = await asyncio.wait_for(self.mesh_topics(), INFO_TOPICS_WAIT), None
        except (ConnectorError, TimeoutError) as exc:
            topics, warning = {}, f"Topic list unavailable: {exc or type(exc).__name__}"
        summary = mesh_summary(self.state, self.layout, topics)
        return {**summary, "warning": warning} if warning else summary


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("Control message not sent: %s", task.exception())


def _now() -> str:
    return iso_utc_ms(_dt.datetime.now(_dt.UTC))
