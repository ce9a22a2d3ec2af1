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
    ORIGIN,
    ConnectorWatchdog,
    FrameError,
    Loopback,
    TopicLayout,
    control_record,
    parse,
)
from meshkit.security import KEY_HEADER, MeshKeys, ReplayGuard, Stamp, public_key
from presence_server._info import mesh_summary, parse_iso
from presence_server._sessions import Session, Sessions
from presence_server._state import ClaimResult, Connection, MeshState

log = logging.getLogger("presence_server")

HELLO_FIELDS = {"name": str, "version": str, "personality": str, "group": int, "created": str, "key": str}


class Refused(Exception):
    """A websocket the monitor will not serve; the message says why (the app logs it)."""


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
        self.sessions = Sessions()
        self._claims: dict[tuple[int, str], asyncio.Future[ClaimResult]] = {}
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
            hello = await self._hello(websocket, origin)
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
        group = hello["group"]
        session = self.sessions[origin] = Session(websocket, time.monotonic(), group, updated=_now())
        name = self.layout.virtual(topic).name
        reason, leaving = "closed", True
        notifier: asyncio.Task[None] | None = None
        try:
            members = {
                o: c.key for o, c in self.state.connections.items() if c.group == group and o != origin
            }
            ready = {"type": "ready", "topic": name, "monitor": self.id, "members": members}
            await websocket.send_text(json.dumps(ready))
            for other in self.state.connections.values():  # who of its group is stopping, after `members`
                if other.draining and other.group == group and other.origin != origin:
                    session.notices.put_nowait(json.dumps({"type": "draining", "origin": other.origin}))
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

    async def _hello(self, websocket: WebSocket, origin: str) -> dict[str, Any]:
        if not ORIGIN.fullmatch(origin):
            raise Refused(f"invalid origin {origin[:80]!r}: yyyymmdd + 32 hex characters expected")
        try:
            raw = await asyncio.wait_for(websocket.receive_text(), 10.0)
            hello = json.loads(raw)
        except TimeoutError:
            raise Refused("no hello within 10 s") from None
        except (ValueError, KeyError, RuntimeError) as exc:
            raise Refused(f"hello is not a JSON text message ({type(exc).__name__})") from None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise Refused("the first message must be a hello")
        for key, kind in HELLO_FIELDS.items():
            if not isinstance(hello.get(key), kind) or isinstance(hello.get(key), bool):
                raise Refused(f"hello field '{key}' must be a {kind.__name__}")
        try:
            public_key(hello["key"])
        except ValueError as exc:
            raise Refused(f"hello field 'key' must be an Ed25519 public key ({exc})") from None
        if not 1 <= hello["group"] <= self.groups:
            raise Refused(f"closed user group {hello['group']} outside 1..{self.groups}")
        if any(len(str(hello[k])) > 200 for k in HELLO_FIELDS):
            raise Refused("hello field too long")
        if parse_iso(hello["created"]) is None:
            raise Refused("hello field 'created' must be an ISO-8601 time")
        return hello

    async def _admit(self, origin: str, hello: dict[str, Any]) -> int:
        if origin in self.sessions:
            raise Refused(f"origin {origin} is already connected")
        existing = self.state.connections.get(origin)
        replaces: str | None = None
        if existing is not None and existing.monitor != self.id:
            # the app moves here from another monitor: wait until that one is gone, else it is a duplicate
            deadline = time.monotonic() + self.monitor_timeout + self.heartbeat
            # polls a clock (heartbeats stopping), which no event signals
            while self.state.alive(existing.monitor, self.monitor_timeout) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            if self.state.alive(existing.monitor, self.monitor_timeout):
                raise Refused(f"origin {origin} is already connected via monitor {existing.monitor}")
            replaces = existing.monitor  # seen gone: this claim may take the app over
        preferred: int | None = None
        if isinstance(hello.get("topic"), str):
            with contextlib.suppress(ValueError):
                preferred = self.layout.index_of(hello["topic"])
        topic = await self._claim(origin, hello, preferred, replaces)
        await self.connector.ensure_topic(self.layout.virtual(topic).topic, self.layout.partitions_per_topic)
        return topic

    async def _claim(
        self, origin: str, hello: dict[str, Any], preferred: int | None, replaces: str | None
    ) -> int:
        tried: set[int] = set()
        for _ in range(8):
            if (
                preferred is not None
                and preferred not in tried
                and self.state.holders.get(preferred) in (None, origin)
            ):
                topic: int | None = preferred
            else:
                pending = {t for t, _ in self._claims}
                topic = self.state.free_topic(self.layout.max_virtual_topics, tried | pending)
            if topic is None:
                raise Refused(
                    f"the mesh is full: all {self.layout.max_virtual_topics} virtual topics are in use"
                )
            tried.add(topic)
            future: asyncio.Future[ClaimResult] = asyncio.get_running_loop().create_future()
            self._claims[(topic, origin)] = future
            info = {k: hello[k] for k in HELLO_FIELDS}
            claim = {"type": "claim", "topic": topic, "origin": origin, "monitor": self.id, "info": info}
            if replaces is not None:
                claim["replaces"] = replaces
            try:
                await self._publish(claim)
                result = await asyncio.wait_for(future, 5.0)
                if result.won:
                    return topic
                if result.held_via is not None:  # another monitor holds the origin: no topic will do
                    raise Refused(f"origin {origin} is already connected via monitor {result.held_via}")
            except (TimeoutError, ConnectorError) as exc:
                raise Refused(f"topic claim failed: {exc or type(exc).__name__}") from exc
            finally:
                self._claims.pop((topic, origin), None)
        raise Refused("could not claim a virtual topic: too many conflicts")

    def _on_message(self, session: Session, origin: str, message: Mapping[str, Any]) -> None:
        if message.get("type") == "websocket.disconnect":
            raise WebSocketDisconnect(int(message.get("code") or 1000))
        session.last_seen = time.monotonic()
        try:
            data = json.loads(message.get("text") or "")
            if isinstance(data, dict) and data.get("type") == "drain":
                self._drain(origin)
                return
            if (
                not isinstance(data, dict)
                or data.get("type") != "alive"
                or not isinstance(data.get("seq"), int)
                or isinstance(data.get("seq"), bool)
                or not 0 <= data["seq"] < 2**53
            ):
                raise ValueError("not a keep-alive")
        except ValueError:
            log.warning("Ignored a malformed presence message from %s", origin)
            return
        session.seq, session.updated = data["seq"], _now()

    def _drain(self, origin: str) -> None:
        """The app is stopping: its group here hears it now, the other monitors' apps through the log."""
        connection = self.state.drain(origin, self.id)
        if connection is None:
            return
        log.info("Member %s (%s %s) is draining", origin, connection.name, connection.version)
        self._notify(connection.group, origin, {"type": "draining", "origin": origin})
        self._spawn(self._publish({"type": "drain", "origin": origin, "monitor": self.id}))

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
        elif kind == "sync" and message.get("from") != self.id and self._synced.is_set():
            snapshot = {"type": "snapshot", "to": message.get("from"), "state": self.state.snapshot()}
            self._spawn(self._publish(snapshot))
        elif kind == "snapshot" and message.get("to") == self.id:
            self.state.merge(message["state"])
            self._synced.set()
        elif kind == "loopback":
            self._loopback.arrived(message.get("id"))

    def _claimed(self, result: ClaimResult, monitor: str) -> None:
        if result.released is not None:
            log.info("%s released by %s (moved)", self.layout.virtual(result.released), result.origin)
        connection = self.state.connections.get(result.origin) if result.won else None
        if connection is not None:  # vouch for its key to our apps of its group: they take its joins now
            notice = {"type": "member", "origin": connection.origin, "key": connection.key}
            self._notify(connection.group, connection.origin, notice)
        future = self._claims.get((result.topic, result.origin)) if monitor == self.id else None
        if future is not None and not future.done():
            future.set_result(result)

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
        notice = {"type": "gone", "origin": connection.origin, "reason": reason}
        self._notify(connection.group, connection.origin, notice)
        session = self.sessions.get(connection.origin)
        if session is not None:  # released while connected here (a split brain healed): it must claim again
            log.warning(
                "Member %s was released while connected here: asked to connect again", connection.origin
            )
            self._spawn(session.websocket.close(1012, "released by the mesh: connect again"))

    def _notify(self, group: int, about: str, notice: dict[str, Any]) -> None:
        self.sessions.notify(group, about, notice, self._disconnect_slow_reader)

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
        await self._publish({"type": "monitor", "id": self.id, "time": _now(), "seen": seen})
        now = time.monotonic()
        for origin, session in list(self.sessions.items()):
            if now - session.last_seen > self.keepalive_timeout:
                log.warning(
                    "Member %s sent no keep-alive for %.0f s: dropped", origin, now - session.last_seen
                )
                with contextlib.suppress(Exception):
                    await session.websocket.close(4000, "keep-alive timeout")
        alive = sorted(m for m in self.state.monitors if self.state.alive(m, self.monitor_timeout))
        if alive and alive[0] != self.id:
            return
        # the leader releases the apps of monitors that died and whose apps did not come back
        cutoff = self.monitor_timeout + self.orphan_grace
        for connection in list(self.state.connections.values()):
            if (
                connection.monitor != self.id
                and not self.state.alive(connection.monitor, cutoff)
                and (now - self._started > cutoff)
            ):
                await self._publish(
                    {
                        "type": "leave",
                        "origin": connection.origin,
                        "monitor": self.id,
                        "owner": connection.monitor,
                        "reason": f"monitor {connection.monitor} gone",
                    }
                )
        for monitor in self.state.dead_monitors(cutoff):
            self.state.forget(monitor)

    # -- what the actuators show ---------------------------------------------------------------------------
    async def loopback(self, timeout: float = 5.0) -> float:
        return await self._loopback.run(self._publish, timeout)

    async def mesh_topics(self) -> dict[str, int]:
        topics = await self.connector.list_topics()
        return {t: n for t, n in sorted(topics.items()) if t == MONITOR_TOPIC or t.startswith("multiplex.")}

    async def additional_info(self) -> dict[str, Any]:
        return mesh_summary(self.state, self.layout, await self.mesh_topics())


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("Control message not sent: %s", task.exception())


def _now() -> str:
    return iso_utc_ms(_dt.datetime.now(_dt.UTC))
