"""Names on the cluster and the topic metadata kept there.

A meshkit topic of N partitions is N Hazelcast reliable topics, `<topic>.<partition>` (`multiplex.0001.3`,
`service.monitor.0`), as the Java original names them; each is backed by the ringbuffer
`_hz_rb_<topic>.<partition>` on the members, which is where its capacity and time-to-live are configured.
Reliable topics have no partition count, so the distributed map `meshkit.topics` holds one entry per
meshkit topic: name -> `{"partitions": N, "created": "<ISO-8601 UTC>"}` as a JSON value (readable from any
client language and queryable with SQL).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from hazelcast.core import HazelcastJsonValue

METADATA_MAP = "meshkit.topics"
RINGBUFFER_PREFIX = "_hz_rb_"


def partition_topic(topic: str, partition: int) -> str:
    """The reliable topic that carries one partition: `multiplex.0001`, 3 -> `multiplex.0001.3`."""
    if not topic:
        raise ValueError("topic name must not be empty")
    if partition < 0:
        raise ValueError(f"partition {partition} must not be negative")
    return f"{topic}.{partition}"


def split_partition_topic(name: str) -> tuple[str, int]:
    """`multiplex.0001.3` -> (`multiplex.0001`, 3); ValueError for a name that is not `<topic>.<n>`."""
    topic, dot, number = name.rpartition(".")
    if not dot or not topic or not number.isascii() or not number.isdigit():
        raise ValueError(f"{name!r} is not a partition's reliable topic (<topic>.<partition>)")
    return topic, int(number)


def ringbuffer_name(topic: str, partition: int) -> str:
    """The member-side ringbuffer behind a partition, for configuring capacity and time-to-live."""
    return RINGBUFFER_PREFIX + partition_topic(topic, partition)


def encode_topic(partitions: int, created: _dt.datetime | None = None) -> HazelcastJsonValue:
    """The metadata map's value for a topic of `partitions` partitions."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"a topic needs at least one partition, not {partitions!r}")
    when = created if created is not None else _dt.datetime.now(_dt.UTC)
    return HazelcastJsonValue(json.dumps({"partitions": partitions, "created": _iso_utc_ms(when)}))


def decode_topic(value: object) -> int:
    """The partition count in a metadata map value; ValueError when it holds none.

    Besides meshkit's JSON value, a bare number (or its text) is accepted, so an entry an operator put by
    hand still counts.
    """
    data: Any = value
    if isinstance(value, HazelcastJsonValue):
        data = _json(value.to_string())
    elif isinstance(value, str):
        data = _json(value)
    if isinstance(data, dict):
        data = data.get("partitions")
    if isinstance(data, bool) or not isinstance(data, int) or data < 1:
        raise ValueError(f"no partition count in topic metadata {value!r}")
    return data


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"topic metadata is not JSON: {text[:80]!r}") from None


def _iso_utc_ms(when: _dt.datetime) -> str:
    # the envelope's timestamp format, written here so that connectors need nothing of the core
    utc = when.replace(tzinfo=_dt.UTC) if when.tzinfo is None else when.astimezone(_dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
