"""The retry budget and policy: retries at most a fraction of recent requests plus a floor; backoff
with jitter."""

from __future__ import annotations

import pytest

from meshkit.config import ConfigError
from meshkit.core._retry import RetryBudget, RetryPolicy, budget_from_config
from meshkit.testing import isolated_config


def test_retries_stay_within_a_fraction_of_recent_requests_plus_the_floor() -> None:
    budget = RetryBudget(ratio=0.2, floor=3, window=10.0)
    for _ in range(100):
        budget.deposit(1.0)
    allowed = sum(budget.withdraw(1.5) for _ in range(1000))
    assert allowed == 23  # 20 % of 100, plus 3
    assert budget.refused == 1000 - 23


def test_the_budget_forgets_requests_older_than_its_window() -> None:
    budget = RetryBudget(ratio=0.5, floor=0, window=10.0)
    for _ in range(100):
        budget.deposit(0.0)
    assert sum(budget.withdraw(1.0) for _ in range(10)) == 10
    # 30 s later the 100 requests (and the 10 retries) are out of the window: nothing left to spend
    assert not budget.withdraw(30.0)
    for _ in range(4):
        budget.deposit(31.0)
    assert sum(budget.withdraw(31.0) for _ in range(10)) == 2


def test_with_no_requests_only_the_floor_is_allowed() -> None:
    budget = RetryBudget(ratio=0.2, floor=2, window=1.0)
    assert [budget.withdraw(0.0) for _ in range(4)] == [True, True, False, False]


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.1, backoff_cap=0.3)
    for retry, cap in ((0, 0.1), (1, 0.2), (2, 0.3), (5, 0.3)):
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap / 2  # spread, not fixed


@pytest.mark.parametrize(
    "properties",
    [
        {"retry.attempts": "11"},
        {"retry.backoff": "-1"},
        {"retry.backoff": "2", "retry.backoff.cap": "1"},
    ],
)
def test_bad_retry_settings_are_refused(properties: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="retry"):
        RetryPolicy.from_config(isolated_config(properties))


@pytest.mark.parametrize(
    "properties", [{"retry.budget.ratio": "-0.1"}, {"retry.budget.floor": "-1"}, {"retry.budget.window": "0"}]
)
def test_bad_budget_settings_are_refused(properties: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"retry\.budget"):
        budget_from_config(isolated_config(properties))
