"""When a request may be sent again: the retry policy and the retry budget that keeps retries in check.

A request is sent again only to a route declared safe to retry (`@route(..., idempotent=True)`, or the
caller's `idempotent=True` for one call), when its instance left, died, could not be reached or refused for
overload (503), and only within its deadline. The budget bounds retries to a fraction of recent requests plus
a small floor, so that when every instance fails, retries do not multiply the load of an outage
(the retry budget of Finagle, and of Envoy's `retry_budget`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from meshkit.config import AppConfig, ConfigError

_SLOTS = 10  # the budget's window is kept as this many slots of counts


class RetryBudget:
    """Retries allowed: at most `ratio` of the requests of the last `window` seconds, plus `floor`."""

    __slots__ = ("_epoch", "_requests", "_retries", "_slot", "floor", "ratio", "refused", "window")

    def __init__(self, ratio: float = 0.2, floor: int = 10, window: float = 10.0) -> None:
        self.ratio, self.floor, self.window = ratio, floor, window
        self._slot = window / _SLOTS
        self._requests = [0] * _SLOTS
        self._retries = [0] * _SLOTS
        self._epoch = 0
        self.refused = 0  # retries the budget said no to

    def _roll(self, now: float) -> int:
        epoch = int(now / self._slot)
        if epoch != self._epoch:
            for stale in range(max(self._epoch + 1, epoch - _SLOTS + 1), epoch + 1):
                self._requests[stale % _SLOTS] = self._retries[stale % _SLOTS] = 0
            self._epoch = epoch
        return epoch % _SLOTS

    def deposit(self, now: float) -> None:
        """A first attempt of a request went out (retries do not deposit)."""
        self._requests[self._roll(now)] += 1

    def withdraw(self, now: float) -> bool:
        """May one more request be retried now? Counts it if so."""
        slot = self._roll(now)
        if sum(self._retries) >= self.ratio * sum(self._requests) + self.floor:
            self.refused += 1
            return False
        self._retries[slot] += 1
        return True


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a request is sent again (`retry.*` settings)."""

    attempts: int = 2  # retries of one request at most, after its first attempt
    backoff: float = 0.025  # seconds before the first retry when no other instance exists; doubles each time
    backoff_cap: float = 1.0

    @classmethod
    def from_config(cls, config: AppConfig) -> RetryPolicy:
        policy = cls(
            attempts=config.get_int("retry.attempts", cls.attempts),
            backoff=config.get_float("retry.backoff", cls.backoff),
            backoff_cap=config.get_float("retry.backoff.cap", cls.backoff_cap),
        )
        if not 0 <= policy.attempts <= 10 or policy.backoff < 0 or policy.backoff_cap < policy.backoff:
            raise ConfigError("retry.attempts must be 0..10, and 0 <= retry.backoff <= retry.backoff.cap")
        return policy

    def delay(self, retry: int) -> float:
        """Full jitter: a random wait up to the doubled backoff, so retrying callers do not move in step."""
        return random.uniform(0, min(self.backoff_cap, self.backoff * 2**retry))


def budget_from_config(config: AppConfig) -> RetryBudget:
    budget = RetryBudget(
        ratio=config.get_float("retry.budget.ratio", 0.2),
        floor=config.get_int("retry.budget.floor", 10),
        window=config.get_float("retry.budget.window", 10.0),
    )
    if not 0 <= budget.ratio <= 10 or budget.floor < 0 or budget.window <= 0:
        raise ConfigError(
            "retry.budget.ratio must be 0..10, retry.budget.floor >= 0, retry.budget.window > 0"
        )
    return budget
