"""Outlier ejection: a peer that keeps failing, or stops answering, is taken out of this caller's rotation.

Each caller decides for itself, from its own requests (as Envoy's outlier detection does), long before the
presence monitor would drop a hung app (`presence.timeout`, 8 s):
- `outlier.failures` (5) answers in a row that are failures (5xx or a timeout) eject the peer;
- a peer with requests pending that has answered none of them for `outlier.stall` (1 s), or for 10x the
  usual latency of the slowest route pending there if that is more, is stalled (hung by SIGSTOP, a full
  event loop, a cut link): ejected too, and its pending requests that are safe to retry are sent to another
  instance at once. A route with no answer seen yet counts as `outlier.stall.unknown` (5 s) slow, so a slow
  route's first calls do not look like a hang.
An ejected peer is out of rotation for `outlier.ejection` (1 s) times 2^(ejections - 1), at most
`outlier.ejection.max` (30 s); then it is on probation, given one request at a time until one succeeds
(a peer still hung costs one request per ejection, not one per caller's worker), and back in rotation
after that; each success earns one ejection back. A route whose every
instance is ejected still uses them: ejection only steers, it never leaves a route with nowhere to go.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from meshkit.config import AppConfig

log = logging.getLogger("meshkit.mesh.outliers")


@dataclass
class _Record:
    in_flight: int = 0
    since: float = 0.0  # when it last answered, or when its oldest unanswered request went out
    failures: int = 0  # in a row
    ejections: int = 0
    routes: Counter[str] = field(default_factory=Counter)  # its requests in flight, by route


class OutlierDetector:
    def __init__(
        self,
        *,
        failures: int = 5,
        stall: float = 1.0,
        stall_unknown: float = 5.0,
        ejection: float = 1.0,
        ejection_max: float = 30.0,
    ) -> None:
        self.failures = failures
        self.stall = stall
        self.stall_unknown = stall_unknown
        self._latency: dict[str, float] = {}  # route -> moving average of its answers, seconds
        self.ejection = ejection
        self.ejection_max = ejection_max
        self._peers: dict[str, _Record] = {}
        self.ejected: dict[str, float] = {}  # origin -> on probation from (loop time)
        self.probation: set[str] = set()  # given one request at a time until one succeeds
        self.ejections = 0  # in all, for /metrics

    @classmethod
    def from_config(cls, config: AppConfig) -> OutlierDetector:
        return cls(
            failures=max(1, config.get_int("outlier.failures", 5)),
            stall=max(0.05, config.get_float("outlier.stall", 1.0)),
            stall_unknown=max(0.05, config.get_float("outlier.stall.unknown", 5.0)),
            ejection=max(0.01, config.get_float("outlier.ejection", 1.0)),
            ejection_max=max(0.01, config.get_float("outlier.ejection.max", 30.0)),
        )

    def is_ejected(self, origin: str, now: float) -> bool:
        """Whether `origin` is out of rotation now (on probation: while its one request is pending)."""
        until = self.ejected.get(origin)
        if until is not None:
            if now < until:
                return True
            del self.ejected[origin]
            self.probation.add(origin)
            log.info("Peer %s on probation: one request at a time until one succeeds", origin)
        if origin in self.probation:
            record = self._peers.get(origin)
            return record is not None and record.in_flight > 0
        return False

    def sent(self, origin: str, route: str, now: float) -> None:
        record = self._peers.get(origin)
        if record is None:
            record = self._peers[origin] = _Record()
        if record.in_flight == 0:
            record.since = now
        record.in_flight += 1
        record.routes[route] += 1

    def answered(self, origin: str, route: str, status: int | None, elapsed: float, now: float) -> bool:
        """Count an answer (`status` None: a timeout); True when it ejects the peer."""
        record = self._peers.get(origin)
        if record is None:
            return False
        record.in_flight = max(0, record.in_flight - 1)
        if record.routes[route] > 1:
            record.routes[route] -= 1
        else:
            record.routes.pop(route, None)
        if status is not None:
            record.since = now
            known = self._latency.get(route)
            self._latency[route] = elapsed if known is None else 0.9 * known + 0.1 * elapsed
        if status is not None and status < 500 and status != 408:  # 408: it was too slow to run it
            record.failures = 0
            if origin in self.probation:
                self.probation.discard(origin)
                log.info("Peer %s back in rotation", origin)
            if record.ejections and origin not in self.ejected:
                record.ejections -= 1
            return False
        record.failures += 1
        if record.failures >= self.failures and origin not in self.ejected:
            self._eject(origin, record, now, f"{record.failures} failures in a row")
            return True
        return False

    def stalled(self, now: float) -> list[str]:
        """Peers with requests pending that have answered nothing for too long: ejected now."""
        found = []
        for origin, record in self._peers.items():
            limit = max((self._limit(route) for route in record.routes), default=self.stall)
            if record.in_flight and now - record.since > limit and origin not in self.ejected:
                waited = now - record.since
                self._eject(
                    origin, record, now, f"no answer to {record.in_flight} requests for {waited:.1f} s"
                )
                record.since, record.in_flight = now, 0  # those are sent elsewhere, or waited for
                record.routes.clear()
                found.append(origin)
        return found

    def _limit(self, route: str) -> float:
        known = self._latency.get(route)
        return self.stall_unknown if known is None else max(self.stall, 10 * known)

    def _eject(self, origin: str, record: _Record, now: float, reason: str) -> None:
        self.probation.discard(origin)
        record.ejections += 1
        record.failures = 0
        interval = min(self.ejection_max, self.ejection * 2 ** (record.ejections - 1))
        self.ejected[origin] = now + interval
        self.ejections += 1
        log.warning("Peer %s out of rotation for %g s: %s", origin, interval, reason)

    def forget(self, origin: str) -> None:
        """The peer left the mesh."""
        self._peers.pop(origin, None)
        self.ejected.pop(origin, None)
        self.probation.discard(origin)

    @property
    def watching(self) -> bool:
        """Whether any peer has requests pending (the stall check has something to do)."""
        return any(record.in_flight for record in self._peers.values())
