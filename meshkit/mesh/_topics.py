"""Virtual topics: `multiplex.NNNN-PPP` is partition PPP of the physical topic `multiplex.NNNN`.

The layout and its index arithmetic: docs/protocol/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MONITOR_TOPIC = "service.monitor"
MULTIPLEX_PREFIX = "multiplex."
DEFAULT_PARTITIONS_PER_TOPIC = 32
DEFAULT_MAX_VIRTUAL_TOPICS = 288
DEFAULT_MAX_GROUPS = 10

_VIRTUAL = re.compile(r"^multiplex\.(\d{4})-(\d{3})$")


@dataclass(frozen=True, slots=True)
class VirtualTopic:
    topic: str  # the physical topic, e.g. multiplex.0001
    partition: int

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition:03d}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """How many partitions each physical topic has and how many virtual topics the mesh may hand out."""

    partitions_per_topic: int = DEFAULT_PARTITIONS_PER_TOPIC
    max_virtual_topics: int = DEFAULT_MAX_VIRTUAL_TOPICS

    def virtual(self, index: int) -> VirtualTopic:
        if not 0 <= index < self.max_virtual_topics:
            raise ValueError(f"virtual topic index {index} outside 0..{self.max_virtual_topics - 1}")
        number, partition = divmod(index, self.partitions_per_topic)
        return VirtualTopic(f"{MULTIPLEX_PREFIX}{number + 1:04d}", partition)

    def index_of(self, name: str) -> int:
        match = _VIRTUAL.match(name)
        if match is None:
            raise ValueError(f"{name!r} is not a virtual topic name (multiplex.NNNN-PPP)")
        number, partition = int(match.group(1)), int(match.group(2))
        if number < 1 or partition >= self.partitions_per_topic:
            raise ValueError(f"{name!r} is outside this mesh's topic layout")
        index = (number - 1) * self.partitions_per_topic + partition
        if index >= self.max_virtual_topics:
            raise ValueError(f"{name!r} is beyond max.virtual.topics={self.max_virtual_topics}")
        return index

    def parse(self, name: str) -> VirtualTopic:
        return self.virtual(self.index_of(name))
