"""Steady load from outside: HTTP clients in threads, each sending one request after another."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    at: float  # monotonic time it was sent
    status: int  # 0: no HTTP answer (connection refused, timeout)
    elapsed: float
    text: str


@dataclass
class Load:
    """`clients` threads GETting `url_of(n)` until stopped; every outcome recorded."""

    url_of: Callable[[int], str]
    clients: int = 8
    timeout: float = 15.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sequence: int = 0

    def _next(self) -> int:
        with self._lock:
            self._sequence += 1
            return self._sequence

    def _client(self) -> None:
        with httpx.Client(trust_env=False, timeout=self.timeout) as http:
            while not self._stop.is_set():
                n = self._next()
                sent = time.monotonic()
                try:
                    response = http.get(self.url_of(n))
                    status, text = response.status_code, response.text[:300]
                except httpx.HTTPError as exc:
                    status, text = 0, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.outcomes.append(Outcome(sent, status, time.monotonic() - sent, text))

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 1)

    def failures(self, since: float = 0.0) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status != 200 and o.at >= since]

    def sent(self, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.at >= since)

    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(o.status for o in self.outcomes)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until at least `count` more requests were answered."""
        target = len(self.outcomes) + count
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load made no progress: {len(self.outcomes)} of {target}")
            time.sleep(0.02)
