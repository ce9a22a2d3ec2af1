"""An app's membership of the mesh: connector, transport, routing table and presence, wired together.

The control messages it exchanges with its peers are in docs/protocol/control.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from meshkit.connectors import Connector
from meshkit.core import Address, AppError, FunctionSpec, Platform, contract
from meshkit.mesh._address import direct_address, direct_listener
from meshkit.mesh._admission import Admission
from meshkit.mesh._callers import CallerProofs
from meshkit.mesh._cards import FrameContracts, make_card
from meshkit.mesh._direct import DirectLinks
from meshkit.mesh._frames import DEFAULT_SEGMENT_SIZE, EVERYONE, FrameError
from meshkit.mesh._intake import CardIntake
from meshkit.mesh._outliers import OutlierDetector
from meshkit.mesh._peers import PEER_MESSAGES, allow_map, allowed, parse_contracts, peer_of, routes_in
from meshkit.mesh._presence import Member, PresenceClient, PresenceFactory
from meshkit.mesh._router import MeshRouter
from meshkit.mesh._table import Peer, RoutingTable
from meshkit.mesh._topics import MONITOR_TOPIC, mesh_settings
from meshkit.mesh._transport import EventTransport
from meshkit.mesh._vouched import ORIGIN, VouchedKeys
from meshkit.mesh._watchdog import ConnectorWatchdog
from meshkit.security import ClientTLS, Identity, MeshKeys, public_key, server_context, signed_by

log = logging.getLogger("meshkit.mesh")

HEALTH_ROUTE = "cloud.connector.health"
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
CONTRACTS_LIMIT = 64 * 1024  # a contracts message's schemas, as JSON, at most; beyond, they go as "any"


class MeshNode:
    """One app instance in the mesh. `presence` makes its link to the control plane (default: a websocket
    to the monitors in `presence.url`)."""

    def __init__(
        self, platform: Platform, connector: Connector, *, presence: PresenceFactory | None = None
    ) -> None:
        config = platform.config
        self.platform = platform
        self.connector = connector
        self.layout, self.group, self.groups = mesh_settings(config)
        self.keys = MeshKeys(config)
        tls = ClientTLS(config)  # wss:// monitors and peers: tls.ca, tls.certfile (checked here, at start)
        self.identity = Identity()
        self.vouched = VouchedKeys()
        self.table = RoutingTable()
        self.transport = EventTransport(
            platform,
            connector,
            segment_size=config.get_int("segment.size", DEFAULT_SEGMENT_SIZE),
            max_event_bytes=config.get_int("max.event.size", DEFAULT_MAX_EVENT_BYTES),
            on_control=self._on_control,
            layout=self.layout,
        )
        self.direct = DirectLinks(
            Admission(platform.origin, self.identity, self.vouched),
            self.keys,
            address=direct_address(config),
            deliver=self.transport.receive,
            on_lost=self._link_lost,
            inbox=platform.inbox,
            reply_topic=self.transport.reply_topic,
            max_event_bytes=self.transport.max_event_bytes,
            connect_timeout=config.get_float("mesh.direct.connect.timeout", 3.0),
            keepalive=config.get_float("mesh.direct.keepalive", 5.0),
            tls=tls,
            listener=(listener := direct_listener(config)),
            server_tls=server_context(config) if listener is not None else None,
        )
        self.router = MeshRouter(
            self.table, self.transport, platform, OutlierDetector.from_config(config), self.direct
        )
        self.proofs = CallerProofs(platform.origin, self.identity, self.vouched, self.table, self._guarded)
        self.router.proofs = self.proofs
        self.transport.identify = self.proofs.identify
        self.drain_quiet = config.get_float("drain.quiet", 1.0)
        if presence is None:
            presence = functools.partial(
                PresenceClient,
                urls=config.get_list("presence.url") or ["ws://127.0.0.1:8080/ws/presence"],
                keepalive=config.get_float("presence.keepalive", 2.0),
                headers=self.keys.headers(),
                tls=tls,
            )
        member = Member(
            platform.origin,
            platform.name,
            platform.version,
            platform.personality,
            self.group,
            self.identity.public_key,
            # off: told of the group by joins, as before cards (a mesh upgraded app by app, and its tests)
            card=self._card if config.get_bool("presence.cards", True) else None,
        )
        self.presence = presence(member, self._on_ready, self._on_notice)
        self._card_message: dict[str, Any] | None = None  # made once, until a public route changes
        self.cards = CardIntake(platform.origin, self.vouched, self.table, self.layout, self.direct)
        self.carded = False  # the monitor we are connected to hands us our group's cards
        self._tasks: set[asyncio.Task[None]] = set()
        self._contracts_message: dict[str, Any] | None = None  # made once, until a public route changes
        self._recheck: asyncio.TimerHandle | None = None
        # a peer missing from a new monitor's list may just be one its log has not reached yet
        self.recheck_after = config.get_float("presence.recheck", 3.0)
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
        self.router.start()
        self.platform.on_route_change(self._route_changed)
        self.platform.on_drain(self.drain)
        if not self.platform.has_local(HEALTH_ROUTE):
            self.platform.register(HEALTH_ROUTE, self._health, private=True)
        await self.direct.start()  # the join says where it listens
        await self.presence.start(self.platform.config.get_float("presence.wait", 10.0))
        self.watchdog.start()

    async def stop(self) -> None:
        self.router.stop()
        await self.watchdog.stop()
        if self._recheck is not None:
            self._recheck.cancel()
        await self.presence.close()
        await self.direct.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self.platform.remote = None
        await self.transport.close()
        await self.connector.close()

    def _guarded(self, to: str | None) -> bool:
        pool = self.platform.pool(Address.parse(to)[0]) if to else None
        return pool is not None and pool.spec.allow is not None

    # -- presence --------------------------------------------------------------------------------------------
    async def _on_ready(
        self, topic_name: str, monitor: str, members: object = None, cards: object = None
    ) -> None:
        self.carded = isinstance(cards, dict)  # this monitor hands us the group's cards
        self._members(members)
        topic = self.layout.parse(topic_name)
        await self.connector.ensure_topic(topic.topic, self.layout.partitions_per_topic)
        await self.transport.listen(topic)
        log.info("%s, partition %d ready", topic.topic, topic.partition)
        if isinstance(cards, dict) and not cards.get("legacy"):
            return  # the monitors hand our card to the group and the group's cards to us
        # a monitor without cards, or members that have none: they learn of us from a join, as before
        marked = {"cards": True} if cards is not None else {}  # apps that have our card skip this join
        await self._publish_group({"type": "join", **self._me(), **marked})
        await self._publish_group(self._contracts())

    async def drain(self, deadline: float) -> None:
        """Stop being sent new requests, and wait until what is in flight or on its way here is done: no
        event arrived and nothing ran for `drain.quiet` seconds (or `deadline`, on the loop's clock)."""
        await self.presence.drain()
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        seen = self.transport.received + self.transport.received_direct
        while loop.time() < deadline:
            await asyncio.sleep(0.02)
            received = self.transport.received + self.transport.received_direct
            if received != seen or self.platform.in_flight() or self.transport.pending_sends:
                seen, quiet_since = received, loop.time()
            elif loop.time() - quiet_since >= self.drain_quiet:
                return

    def _me(self) -> dict[str, Any]:
        p = self.platform
        topic = self.transport.topic
        return {
            "origin": p.origin,
            "name": p.name,
            "version": p.version,
            "personality": p.personality,
            "topic": topic.name if topic else None,
            "batches": True,  # peers may send this app batch records
            "direct": self.direct.address,  # where peers may connect to it directly (None: broker only)
            "routes": p.public_routes(),
            "idempotent": sorted(
                spec.route for spec in p.functions() if spec.idempotent and not spec.private
            ),
            "allow": allow_map(p.functions()),  # routes that take calls only from some apps (access.md)
        }

    def _contracts(self) -> dict[str, Any]:
        """The `contracts` message: what each public route takes and returns (docs/protocol/control.md).
        Made once and kept (each join heard is answered with it) until a public route changes."""
        if self._contracts_message is not None:
            return self._contracts_message
        p = self.platform
        contracts = {spec.route: contract(spec) for spec in p.functions() if not spec.private}
        if len(json.dumps(contracts, default=str)) > CONTRACTS_LIMIT:
            log.warning("Route contracts over %d bytes of JSON: published without schemas", CONTRACTS_LIMIT)
            contracts = {r: {**c, "input": {}, "output": {}, "omitted": True} for r, c in contracts.items()}
        self._contracts_message = {"type": "contracts", "origin": p.origin, "contracts": contracts}
        return self._contracts_message

    def _card(self) -> dict[str, Any]:
        """This app's signed card and its contracts, for the hello (docs/protocol/presence.md#cards)."""
        if self._card_message is None:
            self._card_message = make_card(self.identity, self._me(), self._contracts()["contracts"])
        return self._card_message

    async def _publish_group(self, message: dict[str, Any]) -> None:
        await self.transport.publish_control(
            MONITOR_TOPIC, self.group, EVERYONE, self.identity.sign_control(message)
        )

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("Mesh control message not sent: %s", task.exception())

    def _route_changed(self, spec: FunctionSpec, added: bool) -> None:
        if spec.private:
            return
        self._contracts_message = self._card_message = None
        if self.transport.topic is None:
            return
        change: dict[str, Any] = {"add" if added else "remove": [spec.route]}
        if added and spec.idempotent:
            change["idempotent"] = [spec.route]
        if added and spec.allow is not None:
            change["allow"] = {spec.route: sorted(spec.allow)}
        self._background(self._publish_group({"type": "routes", "origin": self.platform.origin, **change}))
        self._background(self._publish_group(self._contracts()))
        self._background(self.presence.update())  # signed last: the card is the newest state of this app

    # -- what the presence monitor says: which peers it vouches for, and which are gone ----------------------
    def _members(self, members: object) -> None:
        """The monitor's list of our group (origin -> public key), given when we connect to it."""
        keys = {}
        for origin, key in members.items() if isinstance(members, dict) else ():
            try:
                keys[str(origin)] = public_key(key)
            except ValueError as exc:
                log.warning("Presence monitor vouched for %s with a bad key: %s", str(origin)[:80], exc)
        self._replay(self.vouched.replace(keys))
        if set(self.table.peers) - self.vouched.origins():
            if self._recheck is not None:
                self._recheck.cancel()
            self._recheck = asyncio.get_running_loop().call_later(self.recheck_after, self._drop_unvouched)

    def _drop_unvouched(self) -> None:
        for origin in sorted(set(self.table.peers) - self.vouched.origins()):
            self._gone(origin, "no presence monitor vouches for it any more")

    def _on_notice(self, notice: dict[str, Any], bodies: FrameContracts | None = None) -> None:
        kind, origin = notice.get("type"), notice.get("origin")
        if kind == "notices":  # a monitor's batch: its group's cards after ready, then what changed
            entries, shared = notice.get("notices"), FrameContracts(notice.get("contracts"), parse_contracts)
            for entry in entries if isinstance(entries, list) else ():
                # a group's frames tell each of its apps of itself too (presence.md#cards): skipped
                if (
                    isinstance(entry, dict)
                    and entry.get("type") != "notices"
                    and entry.get("origin") != self.platform.origin
                ):
                    self._on_notice(entry, shared)
            return
        if not isinstance(origin, str) or not ORIGIN.fullmatch(origin):
            log.warning("Ignored a %s notice from the presence monitor without a valid origin", kind)
        elif kind == "member":
            try:
                key = public_key(notice.get("key"))
            except ValueError as exc:
                log.warning("Presence monitor vouched for %s with a bad key: %s", origin, exc)
                return
            self._replay(self.vouched.vouch(origin, key))
            if notice.get("card") is not None and self.carded:  # without cards: its join tells us
                self.cards.take(origin, key, notice, bodies)
        elif kind == "gone":
            self._gone(origin, str(notice.get("reason") or "left"))
        elif kind == "draining":
            self.table.drain(origin)
        else:
            log.warning("Ignored a %r notice from the presence monitor", kind)

    def _replay(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            try:
                self._on_control(message)
            except FrameError as exc:
                log.warning("Skipped a held control message: %s", exc)

    def _link_lost(self, origin: str, requests: set[str], reason: str) -> None:
        if self.direct.closing:
            return
        message = f"Direct connection to {origin} lost ({reason})"
        failed = self.platform.fail_requests(requests, message, streams_with=origin)
        if failed:
            log.warning(
                "%d request%s to %s failed over: %s", failed, "" if failed == 1 else "s", origin, message
            )

    def _gone(self, origin: str, reason: str) -> None:
        self.direct.forget(origin)
        self.cards.forget(origin)
        self.vouched.forget(origin)
        gone = self.table.leave(origin)
        self.transport.return_addresses.pop(origin, None)
        self.router.forget(origin)
        name = f"{gone.name} {gone.version}" if gone else "an app that left"
        failed = self.platform.fail_requests_to(origin, f"Peer {origin} ({name}) left before replying")
        if failed:
            log.warning("%d request%s to %s failed: %s", failed, "" if failed == 1 else "s", origin, reason)

    # -- control messages from peers, over the broker --------------------------------------------------------
    def _on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        origin = message.get("origin")
        if kind not in PEER_MESSAGES:
            if kind == "leave":  # only a monitor knows an app has gone, and it says so on the websocket
                log.warning("Refused a leave control message for %s: leaves come from the monitor", origin)
                return
            raise FrameError(f"unknown control message {kind!r}")
        if not isinstance(origin, str) or not ORIGIN.fullmatch(origin):
            raise FrameError(f"a {kind} control message without a valid origin")
        if origin == self.platform.origin or (
            kind == "join" and message.get("cards") is True and self.carded
        ):
            return  # our own, or a join for apps without cards: the monitors hand us its card
        key = self.vouched.key(origin)
        if key is None:
            if not self.vouched.hold(origin, message):
                log.warning(
                    "Dropped a %s control message for %s: not vouched for, too many held", kind, origin
                )
            return
        if not signed_by(key, message):
            log.warning("Refused a %s control message for %s: not signed by that app's key", kind, origin)
            return
        replayed = self.vouched.fresh(origin, message)
        if replayed is not None:
            log.warning("Refused a %s control message for %s as a replay: %s", kind, origin, replayed)
            return
        if kind in ("join", "peer"):
            peer = peer_of(self.layout, message)
            self.table.join(peer)
            self.direct.learn(origin, message.get("direct"))
            if kind == "join" and self.transport.topic is not None:
                self._background(self._answer_join(peer))
        elif kind == "contracts":
            self.table.publish_contracts(origin, parse_contracts(message.get("contracts")))
        else:
            self.table.update(
                origin,
                add=set(routes_in(message.get("add"))),
                remove=set(routes_in(message.get("remove"))),
                idempotent=set(routes_in(message.get("idempotent"))),
                allow=allowed(message.get("allow")),
            )

    async def _answer_join(self, peer: Peer) -> None:
        """Tell a newcomer who we are and what our routes take (it listens only from its own join)."""
        topic, partition = peer.topic.topic, peer.topic.partition
        for message in ({"type": "peer", **self._me()}, self._contracts()):
            await self.transport.publish_control(
                topic, partition, peer.origin, self.identity.sign_control(message)
            )

    # -- cloud.connector.health ------------------------------------------------------------------------------
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


async def join_mesh(
    platform: Platform, connector: Connector, *, presence: PresenceFactory | None = None
) -> MeshNode:
    """Connect a started `platform` to the mesh through `connector`; it leaves when the platform stops."""
    node = MeshNode(platform, connector, presence=presence)
    await node.start()
    platform.on_shutdown(node.stop)
    return node
