"""Virtual topics: `multiplex.NNNN-PPP` is partition PPP of the physical topic `multiplex.NNNN`.

The layout and its index arithmetic: docs/protocol/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshkit.config import AppConfig, ConfigError

MONITOR_TOPIC = "service.monitor"
MULTIPLEX_PREFIX = "multiplex."
DEFAULT_PARTITIONS_PER_TOPIC = 32
DEFAULT_MAX_VIRTUAL_TOPICS = 288
DEFAULT_MAX_GROUPS = 10
MAX_PHYSICAL_TOPICS = 9999  # multiplex.NNNN: four digits

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


def mesh_settings(config: AppConfig) -> tuple[TopicLayout, int, int]:
    """(topic layout, this app's closed user group, how many groups) from configuration, checked."""
    layout = TopicLayout(
        config.get_int("app.partitions.per.topic", DEFAULT_PARTITIONS_PER_TOPIC),
        config.get_int("max.virtual.topics", DEFAULT_MAX_VIRTUAL_TOPICS),
    )
    if not 1 <= layout.partitions_per_topic <= 1000:
        raise ConfigError("app.partitions.per.topic must be 1..1000")
    most = MAX_PHYSICAL_TOPICS * layout.partitions_per_topic
    if not 1 <= layout.max_virtual_topics <= most:
        raise ConfigError(
            f"max.virtual.topics must be 1..{most} ({MAX_PHYSICAL_TOPICS} topics of app.partitions.per.topic)"
        )
    groups = config.get_int("max.closed.user.groups", DEFAULT_MAX_GROUPS)
    group = config.get_int("closed.user.group", 1)
    if not 1 <= group <= groups:
        raise ConfigError(f"closed.user.group={group} must be between 1 and max.closed.user.groups={groups}")
    return layout, group, groups
