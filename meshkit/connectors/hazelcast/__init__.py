"""The Hazelcast connector (`cloud.connector=hazelcast`), on hazelcast-python-client.

`HazelcastConnector(hazelcast_settings(config))` connects to the members in `hazelcast.cluster.members`
(cluster `hazelcast.cluster.name`, default "dev"); any other `hazelcast.<option>` property is passed to the
client's Config (timeouts, TLS, credentials). Each partition of a meshkit topic is a reliable topic
`<topic>.<partition>` (`multiplex.0001.3`); the partition counts live in the distributed map `meshkit.topics`
so every app sees the same topics. Records travel as byte arrays (a Java `byte[]`), at most 4 MiB each;
segmentation of larger events and the size limits of the mesh sit above the connector, as for Kafka.

On the members, the ringbuffers behind the reliable topics (`_hz_rb_multiplex.*`, `_hz_rb_service.monitor.*`)
are worth a smaller capacity or a time-to-live than Hazelcast's default of 10,000 records kept forever.
"""

import warnings

try:
    with warnings.catch_warnings():
        # On Python 3.11 the client imports the standard library's asyncore, which warns that it is deprecated
        # (the client ships its own copy for 3.12 on): the client's business, not the app's.
        warnings.filterwarnings("ignore", "The asyncore module is deprecated", DeprecationWarning)
        import hazelcast  # noqa: F401
except ModuleNotFoundError as e:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        "cloud.connector=hazelcast needs hazelcast-python-client: pip install 'meshkit[hazelcast]'"
    ) from e

from meshkit.connectors.hazelcast._config import (
    CLIENT_DEFAULTS,
    DEFAULT_CLUSTER_NAME,
    DEFAULT_MEMBERS,
    MAX_RECORD_BYTES,
    client_config,
    hazelcast_settings,
)
from meshkit.connectors.hazelcast._connector import HazelcastConnector
from meshkit.connectors.hazelcast._listener import HazelcastSubscription, PartitionListener
from meshkit.connectors.hazelcast._naming import (
    METADATA_MAP,
    decode_topic,
    encode_topic,
    partition_topic,
    ringbuffer_name,
    split_partition_topic,
)

__all__ = [
    "CLIENT_DEFAULTS",
    "DEFAULT_CLUSTER_NAME",
    "DEFAULT_MEMBERS",
    "MAX_RECORD_BYTES",
    "METADATA_MAP",
    "HazelcastConnector",
    "HazelcastSubscription",
    "PartitionListener",
    "client_config",
    "decode_topic",
    "encode_topic",
    "hazelcast_settings",
    "partition_topic",
    "ringbuffer_name",
    "split_partition_topic",
]
