"""The presence client: a websocket to a presence monitor that hands out this app's virtual topic.

It says who this app is, keeps the connection alive, and moves to the next monitor in `presence.url`
when its monitor goes away, keeping (or cleanly re-getting) its topic. The messages are in
docs/protocol/presence.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from meshkit.core import iso_utc_ms
from meshkit.security import ClientTLS

log = logging.getLogger("meshkit.mesh.presence")

OnNotice = Callable[[dict[str, Any]], None]  # a peer vouched for ("member"), stopping ("draining"), gone
Card = Callable[[], dict[str, Any]]  # this app's signed card and its contracts, for its `card` message
MAX_MESSAGE_BYTES = 4 << 20  # a monitor's frames of its group's cards are at most 512 KiB (presence.md)


class OnReady(Protocol):
    def __call__(self, topic: str, monitor: str, members: object, cards: object = None, /) -> Awaitable[None]:
        """(virtual topic name, monitor id, group members, and for a monitor that keeps cards what it says
        of them: {"legacy": origins of members without one}; None from one that does not)"""


@dataclass(frozen=True)
class Member:
    """Who an app instance says it is to the control plane (its hello)."""

    origin: str
    name: str
    version: str
    personality: str
    group: int
    public_key: str  # base64 of its Ed25519 public key: the monitors vouch for it to the group
    card: Card | None = field(default=None, compare=False)  # its card, for monitors that keep cards


class Presence(Protocol):
    """An app's link to the control plane: it gets the app its virtual topic (`on_ready`) and tells it which
    peers are vouched for and which have gone (`on_notice`)."""

    connected: asyncio.Event  # set while the control plane holds this app

    async def start(self, wait: float) -> bool:
        """Connect in the background; True if connected within `wait` seconds."""

    async def drain(self) -> None:
        """Say this app is stopping: the control plane tells the group to send it no new requests."""

    async def update(self) -> None:
        """This app's card changed (a public route came or went): the control plane tells the group."""

    async def close(self) -> None:
        """Leave: the control plane releases the topic and tells the group."""


#: makes an app's Presence from who it is and the node's handlers (MeshNode takes one; meshkit.testing has
#: an in-process one)
PresenceFactory = Callable[[Member, OnReady, OnNotice], Presence]


class PresenceRefused(Exception):
    """The monitor said no (mesh full, origin already connected, bad key)."""


class PresenceClient:
    """The Presence of an app in a real mesh: a websocket to one of the monitors in `urls`."""

    def __init__(
        self,
        member: Member,
        on_ready: OnReady,
        on_notice: OnNotice,
        *,
        urls: list[str],
        keepalive: float,
        headers: dict[str, str] | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.member = member
        self.tls = tls or ClientTLS()  # for wss:// monitors: the CA to trust, this app's certificate (tls.*)
        self._tls_failures: dict[str, str] = {}  # url -> the TLS failure last logged as a warning
        self.urls = [u.rstrip("/") for u in urls]
        self.keepalive = keepalive
        self.on_ready = on_ready
        self.on_notice = on_notice
        self.headers = headers or {}
        self.topic: str | None = None
        self.monitor: str | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._created = iso_utc_ms(_dt.datetime.now(_dt.UTC))
        self.draining = False
        self.cards = False  # the monitor keeps cards (its ready said so): it takes this app's new ones

    async def start(self, wait: float) -> bool:
        """Connect in the background; True if the first monitor answered within `wait` seconds."""
        self._task = asyncio.create_task(self._run(), name="meshkit:presence")
        try:
            await asyncio.wait_for(self.connected.wait(), wait)
            return True
        except TimeoutError:
            log.warning(
                "No presence monitor answered within %g s (%s); still trying", wait, ", ".join(self.urls)
            )
            return False

    async def drain(self) -> None:
        self.draining = True  # a monitor this app moves to hears it in the hello
        ws = self._ws
        if ws is not None and self.connected.is_set():
            try:
                await ws.send(json.dumps({"type": "drain"}))
            except websockets.WebSocketException as exc:
                log.warning("Could not tell the presence monitor this app is draining: %s", exc)

    async def update(self) -> None:
        ws = self._ws
        if ws is not None and self.connected.is_set() and self.cards and self.member.card is not None:
            try:
                await ws.send(json.dumps({"type": "card", **self.member.card()}))
            except websockets.WebSocketException as exc:  # sent again once connected again
                log.warning("Could not give the presence monitor this app's new card: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._ws is not None:
            await self._ws.close(1000, "stopping")
            self._ws = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                await self._session(url)
                attempt = 0  # a session that ran: start again from the first monitor
            except PresenceRefused as exc:
                log.error("Presence monitor %s refused this app: %s", url, exc)
                await asyncio.sleep(5.0)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                if self._ws is not None or not self._tls_failed(url, exc):
                    log.warning("Presence monitor %s unavailable: %s", url, exc or type(exc).__name__)
            except Exception:  # a bug in handling what it said: that session ends, never the app's presence
                log.exception("Presence monitor %s: the session failed; connecting again", url)
            finally:
                self.connected.clear()
                self._ws = None
            await asyncio.sleep(0.5 if attempt < len(self.urls) else 1.0)

    def _tls_failed(self, url: str, exc: BaseException) -> bool:
        """Log why opening the connection failed TLS (a warning, then info while it stays the same); False
        when it was not TLS."""
        reason = self.tls.describe_failure(exc, url)
        if reason is None:
            return False
        level = logging.INFO if self._tls_failures.get(url) == reason else logging.WARNING
        self._tls_failures[url] = reason
        log.log(level, "Presence monitor %s: TLS handshake failed: %s", url, reason)
        return True

    async def _session(self, url: str) -> None:
        target = f"{url}/{self.member.origin}"
        # pings find a monitor that hangs (its socket open, nothing answering): the app then moves on
        async with connect(
            target,
            ssl=self.tls.for_url(url),
            additional_headers=self.headers,
            open_timeout=5,
            ping_interval=self.keepalive,
            ping_timeout=2 * self.keepalive,
            close_timeout=self.keepalive / 4,  # a cut link never brings the close frame: move on, not in 10 s
            max_size=MAX_MESSAGE_BYTES,
            compression=None,  # cards and notices are small JSON: deflating them costs both ends CPU
        ) as ws:
            self._ws = ws
            await ws.send(json.dumps(self._hello()))
            answer = _answer(await asyncio.wait_for(ws.recv(), 10.0))
            if answer.get("type") == "error":
                raise PresenceRefused(answer.get("message", "refused"))
            if answer.get("type") != "ready" or not isinstance(answer.get("topic"), str):
                raise websockets.InvalidMessage(f"unexpected answer {answer!r}")
            self.topic, self.monitor = answer["topic"], str(answer.get("monitor"))
            self._tls_failures.pop(url, None)
            log.info("Connected %s, %s", target, self.topic)
            self.cards = answer.get("cards") is True
            legacy = answer.get("legacy") if self.cards else None
            cards = {"legacy": legacy if isinstance(legacy, list) else []} if self.cards else None
            # alive from now on: setting up the topic can take longer than presence.timeout on a busy broker
            keepalive = asyncio.create_task(self._keep_alive(ws))
            try:
                await self.on_ready(self.topic, self.monitor, answer.get("members"), cards)
                self.connected.set()
                await self.update()  # listening now: the monitors may hand its card to the group
                async for message in ws:
                    self._on_message(message)
                    await asyncio.sleep(0)  # a long run of frames does not hold the loop (keep-alives run)
            finally:
                keepalive.cancel()
            log.warning(
                "Presence monitor %s closed the connection (%s)", url, ws.close_reason or ws.close_code
            )

    def _hello(self) -> dict[str, Any]:
        me = self.member
        return {
            "type": "hello",
            "origin": me.origin,
            "name": me.name,
            "version": me.version,
            "personality": me.personality,
            "group": me.group,
            "created": self._created,
            "topic": self.topic,
            "key": me.public_key,
            "draining": self.draining,
            **({"cards": True} if me.card is not None else {}),
        }

    async def _keep_alive(self, ws: ClientConnection) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self.keepalive)
            seq += 1
            await ws.send(json.dumps({"type": "alive", "seq": seq}))

    def _on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            log.warning("Ignored a message from the presence monitor that is not JSON")
            return
        if not isinstance(data, dict):
            log.warning("Ignored a message from the presence monitor that is not a JSON object")
        elif data.get("type") == "error":
            log.error("Presence monitor: %s", data.get("message"))
        elif data.get("type") in ("member", "gone", "draining", "notices"):
            try:
                self.on_notice(data)
            except Exception:  # one notice this app cannot take costs that notice, not the session
                log.exception("Ignored a %s notice from the presence monitor that failed", data.get("type"))


def _answer(message: str | bytes) -> dict[str, Any]:
    """The monitor's answer to the hello, a JSON object; InvalidMessage for anything else (garbage ends the
    session, as a broken connection does: the app connects again)."""
    try:
        answer = json.loads(message)
    except ValueError:
        raise websockets.InvalidMessage("its answer to the hello is not JSON") from None
    if not isinstance(answer, dict):
        raise websockets.InvalidMessage(f"its answer to the hello is not a JSON object: {answer!r:.80}")
    return answer
