"""Each function's executions, counted by its pool as it runs them: what observers (`/metrics`) read."""

from __future__ import annotations

from bisect import bisect_left

#: upper bounds (seconds) of the execution-time histogram buckets; +Inf follows
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RouteStats:
    """One function's executions: a histogram of their run time and the error statuses. Event loop only."""

    __slots__ = ("buckets", "errors", "seconds", "segment_bytes", "segments", "streams")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.seconds = 0.0
        self.errors: dict[int, int] = {}
        self.streams = self.segments = self.segment_bytes = 0  # a streaming function's: ended, and sent

    def streamed(self, segments: int, size: int) -> None:
        """A stream ended after `segments` data segments of `size` bytes in all."""
        self.streams += 1
        self.segments += segments
        self.segment_bytes += size

    def observe(self, seconds: float, status: int) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds
        if status >= 400:
            self.errors[status] = self.errors.get(status, 0) + 1

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, executions at or below it) per bucket, the last bound being +Inf."""
        result, total = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            result.append((bound, total))
        return result
