"""Outlier detection on its own: failures in a row, stalls, growing ejections, slow routes not taken
for hangs."""

from __future__ import annotations

from meshkit.mesh._outliers import OutlierDetector


def test_failures_in_a_row_eject_and_a_success_in_between_does_not() -> None:
    detector = OutlierDetector(failures=3, ejection=1.0)
    for status in (500, 503, 200, 500, 503):
        detector.sent("a", "r.x", 0.0)
        assert not detector.answered("a", "r.x", status, 0.01, 0.0)
    detector.sent("a", "r.x", 0.0)
    assert detector.answered("a", "r.x", None, 5.0, 0.0)  # a timeout: the third failure in a row
    assert detector.is_ejected("a", 0.5) and not detector.is_ejected("a", 1.01)


def test_each_ejection_lasts_twice_as_long_up_to_the_cap() -> None:
    detector = OutlierDetector(failures=1, ejection=1.0, ejection_max=3.0)
    intervals = []
    now = 0.0
    for _ in range(4):
        detector.sent("a", "r.x", now)
        detector.answered("a", "r.x", 503, 0.01, now)
        intervals.append(detector.ejected["a"] - now)
        now = detector.ejected["a"] + 0.001
        assert not detector.is_ejected("a", now)
    assert intervals == [1.0, 2.0, 3.0, 3.0]  # failing while on probation: out again, for longer
    assert detector.ejections == 4


def test_a_peer_that_answers_nothing_with_requests_pending_is_stalled() -> None:
    detector = OutlierDetector(stall=1.0)
    detector.sent("a", "r.fast", 0.0)
    detector.answered("a", "r.fast", 200, 0.01, 0.01)  # r.fast takes 10 ms there
    for _ in range(3):
        detector.sent("a", "r.fast", 0.02)
    assert detector.stalled(0.9) == []
    assert detector.stalled(1.1) == ["a"]
    assert detector.is_ejected("a", 1.2)
    assert not detector.watching  # its stuck requests are forgotten: sent elsewhere, or waited for
    assert detector.stalled(10.0) == []


def test_a_slow_route_is_not_taken_for_a_hang() -> None:
    detector = OutlierDetector(stall=1.0, stall_unknown=5.0)
    detector.sent("a", "r.report", 0.0)
    assert detector.stalled(3.0) == []  # never answered yet: 5 s allowed
    detector.answered("a", "r.report", 200, 4.0, 4.0)  # it takes 4 s
    detector.sent("a", "r.report", 4.0)
    assert detector.stalled(30.0) == []  # 10 x 4 s allowed
    assert detector.stalled(44.5) == ["a"]


def test_a_peer_that_left_is_forgotten() -> None:
    detector = OutlierDetector(failures=1)
    detector.sent("a", "r.x", 0.0)
    detector.answered("a", "r.x", 500, 0.01, 0.0)
    detector.forget("a")
    assert not detector.is_ejected("a", 0.1) and not detector.watching


def test_after_an_ejection_a_peer_gets_one_request_at_a_time_until_one_succeeds() -> None:
    detector = OutlierDetector(failures=1, ejection=1.0)
    detector.sent("a", "r.x", 0.0)
    detector.answered("a", "r.x", 503, 0.01, 0.0)
    assert detector.is_ejected("a", 0.5)
    assert not detector.is_ejected("a", 1.5)  # on probation: free for one request
    detector.sent("a", "r.x", 1.5)
    assert detector.is_ejected("a", 1.6)  # its probe is pending: no second one
    detector.answered("a", "r.x", 200, 0.01, 1.6)
    assert not detector.probation and not detector.is_ejected("a", 1.7)
    detector.sent("a", "r.x", 1.7)
    assert not detector.is_ejected("a", 1.8)  # back in rotation: several at once again
