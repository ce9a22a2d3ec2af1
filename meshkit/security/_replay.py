"""Replay-proof control messages: a signed message says when it was made and which of its sender's messages it
is, so one captured and written again is refused (docs/protocol/signing.md#replay)."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

WINDOW_SECONDS = 120.0  # clocks of a mesh agree within this (NTP); a message older or newer is refused
KEPT = 1024  # numbers remembered per sender: below the oldest kept, a number counts as seen
MAX_SEQ = 2**63 - 1


class Stamp:
    """A sender's stamps: `ts` (milliseconds since the epoch) and `seq` (1, 2, ..., for this sender)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._numbers = itertools.count(1)

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "ts": int(self._clock() * 1000), "seq": next(self._numbers)}


class _Seen:
    __slots__ = ("floor", "heap", "heard", "numbers")

    def __init__(self, heard: float) -> None:
        self.heard = heard
        self.numbers: set[int] = set()
        self.heap: list[int] = []
        self.floor = 0  # every number at or below it counts as seen


class ReplayGuard:
    """Which of each sender's messages were taken; `check` refuses one seen before or made outside the
    window. Check only messages whose signature verified: a forged one must not use up a number.
    A sender silent for twice the window is forgotten: any message of its would be outside it by then."""

    def __init__(
        self, window: float = WINDOW_SECONDS, kept: int = KEPT, clock: Callable[[], float] = time.time
    ) -> None:
        self.window, self.kept, self._clock = window, kept, clock
        self._senders: dict[str, _Seen] = {}
        self._checks = 0

    @staticmethod
    def unstamped(message: dict[str, Any]) -> str | None:
        """Why `message` carries no valid stamp (signing.md#what-a-receiver-refuses, rule 1), or None."""
        ts, seq = message.get("ts"), message.get("seq")
        if type(ts) is not int or type(seq) is not int or not 0 < seq <= MAX_SEQ:
            return "it has no ts and seq stamp"
        return None

    def check(self, sender: str, message: dict[str, Any]) -> str | None:
        """None, and the message counts as seen; or why it is refused."""
        unstamped = self.unstamped(message)
        if unstamped is not None:
            return unstamped
        ts, seq = message["ts"], message["seq"]
        age = self._clock() - ts / 1000
        if abs(age) > self.window:
            when = "ago" if age > 0 else "ahead"
            return f"it was stamped {abs(age):.0f} s {when}, outside the {self.window:g} s window"
        now = self._clock()
        self._checks += 1
        if self._checks % 256 == 0:
            self._prune(now)
        seen = self._senders.get(sender)
        if seen is None:
            seen = self._senders[sender] = _Seen(now)
        if seq <= seen.floor or seq in seen.numbers:
            return f"its seq {seq} was seen before"
        seen.heard = now
        seen.numbers.add(seq)
        heapq.heappush(seen.heap, seq)
        if len(seen.heap) > self.kept:
            seen.floor = heapq.heappop(seen.heap)
            seen.numbers.discard(seen.floor)
        return None

    def _prune(self, now: float) -> None:
        silent = [sender for sender, seen in self._senders.items() if now - seen.heard > 2 * self.window]
        for sender in silent:
            del self._senders[sender]

    def forget(self, sender: str) -> None:
        self._senders.pop(sender, None)

    def senders(self) -> int:
        return len(self._senders)
