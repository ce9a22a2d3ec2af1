"""What callers see: clients in threads sending one mesh request after another through the caller app.

    with Calls(caller.url, deadline=3.0) as calls:
        calls.wait_for(20)
        ...                                   # a fault
        print(calls.summary(since=cut_at).line())

Each call is ``GET /call/mesh.once?timeout=DEADLINE&mark=N`` on the caller (tests/apps/mesh_echo.py): one
``PostOffice.request`` through the mesh to a callee, never retried (the route is not declared safe to
retry). The test's HTTP client waits ``deadline + HTTP_GRACE``: a call that took longer counts as hung.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

import httpx

HTTP_GRACE = 5.0  # beyond the deadline, the test's own client gives up: the call hung
DEADLINE_SLACK = 1.0  # a call may end this long after its deadline (one loop turn, the HTTP hop), no more
PACE = 0.05  # seconds each client waits between calls


@dataclass(frozen=True)
class Call:
    mark: int
    sent: float  # monotonic, when the test sent it
    took: float  # the test's round trip
    elapsed: float  # the mesh request's own time, as the caller measured it (its round trip if unanswered)
    status: int  # the mesh request's outcome as the caller saw it; 0: no HTTP answer at all
    error: str
    served_by: str  # the callee's origin ("" unless it succeeded)
    echoed: bool  # the reply is the one for this request (its mark came back)


@dataclass
class Summary:
    deadline: float
    calls: list[Call]

    @property
    def ok(self) -> int:
        return sum(1 for c in self.calls if c.status == 200)

    @property
    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.status != 200]

    @property
    def timeouts(self) -> int:
        return sum(1 for c in self.calls if c.status == 408)

    @property
    def max_elapsed(self) -> float:
        return max((c.elapsed for c in self.calls), default=0.0)

    @property
    def max_took(self) -> float:
        return max((c.took for c in self.calls), default=0.0)

    def late(self) -> list[Call]:
        """Calls whose mesh request ended past its deadline, or that got no HTTP answer at all (hung)."""
        return [c for c in self.calls if c.status == 0 or c.elapsed > self.deadline + DEADLINE_SLACK]

    def errors(self) -> Counter[str]:
        return Counter(f"{c.status} {_shape(c.error)}" for c in self.failed)

    def line(self) -> str:
        return (
            f"{len(self.calls)} calls: {self.ok} ok, {len(self.failed)} failed ({self.timeouts} timeouts), "
            f"max {self.max_elapsed:.2f} s in the caller, {self.max_took:.2f} s round trip (deadline "
            f"{self.deadline:g} s); errors {dict(self.errors())}"
        )


def _shape(error: str) -> str:
    """An error's text with origins and numbers taken out, so that equal failures count together."""
    words = ["<origin>" if len(w.strip("()")) == 40 and w[:8].isdigit() else w for w in error.split()]
    return " ".join(words)[:160]


@dataclass
class Calls:
    caller_url: str
    deadline: float = 3.0
    clients: int = 4
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _marks: int = 0

    def _client(self) -> None:
        with httpx.Client(trust_env=False, timeout=self.deadline + HTTP_GRACE) as http:
            while not self._stop.is_set():
                with self._lock:
                    self._marks += 1
                    mark = self._marks
                url = f"{self.caller_url}/call/mesh.once?timeout={self.deadline}&mark={mark}"
                sent = time.monotonic()
                try:
                    outcome = http.get(url).json()
                except (httpx.HTTPError, json.JSONDecodeError) as exc:
                    outcome = {"status": 0, "error": f"{type(exc).__name__}: {exc}"}
                took = time.monotonic() - sent
                status, raw = int(outcome.get("status", 0)), outcome.get("body")
                body = raw if isinstance(raw, dict) else {}
                # an error reply (a 503 envelope) carries its text as the body, a bus error as "error"
                error = str(outcome.get("error") or ("" if status == 200 else raw))
                served_by = str(body.get("origin", "")) if status == 200 else ""
                elapsed = float(outcome.get("elapsed", took))
                call = Call(
                    mark, sent, took, elapsed, status, error, served_by, body.get("mark") == str(mark)
                )
                with self._lock:
                    self.calls.append(call)
                # paced: a few dozen calls a second show what callers see, and leave the CPU to the mesh
                time.sleep(PACE if call.status == 200 else 0.05)

    def summary(self, since: float = 0.0, until: float = float("inf")) -> Summary:
        with self._lock:
            return Summary(self.deadline, [c for c in self.calls if since <= c.sent < until])

    def ended(self, since: float, before: float) -> Summary:
        """The calls sent from ``since`` that ended before ``before``: what ended after a heal is not
        the cut's to count."""
        with self._lock:
            return Summary(
                self.deadline, [c for c in self.calls if since <= c.sent and c.sent + c.took < before]
            )

    def wait_for(self, count: int, *, served_by: str | None = None, timeout: float = 60.0) -> float:
        """Until ``count`` more calls succeeded (served by ``served_by``, if given); returns when the last
        of them was answered."""
        start = len(self.calls)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                done = [
                    c
                    for c in self.calls[start:]
                    if c.status == 200 and (served_by is None or c.served_by == served_by)
                ]
            if len(done) >= count:
                return done[count - 1].sent + done[count - 1].took
            if time.monotonic() > deadline:
                where = f" on {served_by}" if served_by else ""
                raise AssertionError(f"{len(done)} of {count} calls succeeded{where} within {timeout:g} s")
            time.sleep(0.05)

    def __enter__(self) -> Calls:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.deadline + HTTP_GRACE + 1)
