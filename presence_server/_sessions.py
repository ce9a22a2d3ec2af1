"""The apps connected to this monitor, and the notices it pushes to them over their websockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fastapi import WebSocket

log = logging.getLogger("presence_server")

# per app; the queue holds the texts every app of the group shares, so a long one costs little: an app that
# reads none of them is dropped (and gets the whole list again when it comes back)
MAX_PENDING_NOTICES = 20_000
NOTICE_INTERVAL = 0.1  # seconds: an app with cards gets what came meanwhile in one frame
MAX_FRAME_CHARS = 512 * 1024  # one frame of notices, with the contracts its cards name

Notice = tuple[str, str | None]  # the notice as JSON, and the digest of the contracts its card names
Bodies = Callable[[str], str | None]  # digest -> the contracts map as JSON (None: no longer kept)


def frames(notices: Iterable[Notice], bodies: Bodies) -> list[str]:
    """`notices` frames of at most about MAX_FRAME_CHARS each, with the contracts their cards name."""
    made: list[str] = []
    texts: list[str] = []
    contracts: dict[str, str] = {}
    size = 0
    for text, digest in notices:
        body = bodies(digest) if digest is not None and digest not in contracts else None
        if texts and size + len(text) + len(body or "") > MAX_FRAME_CHARS:
            made.append(_frame(texts, contracts))
            texts, contracts, size = [], {}, 0
            body = bodies(digest) if digest is not None else None
        texts.append(text)
        size += len(text)
        if body is not None and digest is not None:
            contracts[digest] = body
            size += len(body)
    if texts:
        made.append(_frame(texts, contracts))
    return made


def _frame(texts: list[str], contracts: dict[str, str]) -> str:
    # the texts are JSON already: joined, not encoded again for each app
    bodies = ", ".join(f'"{digest}": {body}' for digest, body in contracts.items())
    return f'{{"type": "notices", "notices": [{", ".join(texts)}], "contracts": {{{bodies}}}}}'


@dataclass
class Session:
    websocket: WebSocket
    last_seen: float
    group: int
    seq: int = 0
    updated: str = ""
    cards: bool = False  # it brought a card: it takes the `notices` frames its group shares
    key: str = ""  # its public key, as its hello said
    notices: asyncio.Queue[Notice] = field(default_factory=lambda: asyncio.Queue(MAX_PENDING_NOTICES))

    async def send_notices(self) -> None:
        """Runs while the session does: one writer, so notices reach the app in the order they were made."""
        while True:
            await self.websocket.send_text((await self.notices.get())[0])


class Sessions(dict[str, Session]):
    """origin -> its session on this monitor.

    Apps with cards get their group's notices in `notices` frames made once for the whole group, at most
    one round per NOTICE_INTERVAL: a join storm costs each app a frame or so per interval, not one per
    newcomer, and the monitor one text per frame, not one per app (presence.md#cards). Each such app is
    told of itself too, and skips that; an app without cards gets each notice alone, about others only."""

    def __init__(self, bodies: Bodies = lambda digest: None) -> None:
        super().__init__()
        self._bodies = bodies
        self._batches: dict[int, list[Notice]] = {}
        self._flushed: dict[int, float] = {}  # group -> when its last round of frames was queued

    def notify(
        self,
        group: int,
        about: str,
        notice: Notice,
        on_overflow: Callable[[Session], None],
        plain: Notice | None = None,
    ) -> None:
        """Queue `notice` for every app of `group` here but the one it is about (`plain` instead, if given,
        for the apps without cards)."""
        batched = False
        for origin, session in list(self.items()):
            if session.group != group:
                continue
            if session.cards:
                batched = True
            elif origin != about:
                self._put(origin, session, plain or notice, on_overflow)
        if not batched:
            return
        batch = self._batches.get(group)
        if batch is None:
            batch = self._batches[group] = []
            loop = asyncio.get_running_loop()
            wait = self._flushed.get(group, 0.0) + NOTICE_INTERVAL - loop.time()
            loop.call_later(max(wait, 0.0), self._flush, group, on_overflow)
        batch.append(notice)

    def _flush(self, group: int, on_overflow: Callable[[Session], None]) -> None:
        batch = self._batches.pop(group, [])
        self._flushed[group] = asyncio.get_running_loop().time()
        made = [(text, None) for text in frames(batch, self._bodies)]
        for origin, session in list(self.items()):
            if session.group == group and session.cards:
                for frame in made:
                    if not self._put(origin, session, frame, on_overflow):
                        break

    def _put(
        self, origin: str, session: Session, notice: Notice, on_overflow: Callable[[Session], None]
    ) -> bool:
        try:
            session.notices.put_nowait(notice)
            return True
        except asyncio.QueueFull:
            log.warning(
                "Member %s reads no mesh notices (%d waiting): disconnected", origin, MAX_PENDING_NOTICES
            )
            on_overflow(session)
            return False
